"""The learned word-level instruction encoder: vocabulary from the training data, a shared unknown word."""

from __future__ import annotations

import pytest
import torch

from vlagym.agents.collect import CollectConfig, collect
from vlagym.policies import load_policy
from vlagym.policies.language import WordEncoder, build_vocab, make_text_encoder
from vlagym.policies.train import TrainConfig, train


def test_vocabulary_unknown_words_and_pooling():
    vocab = build_vocab(["Pick up the red cube.", "pick up the blue cylinder, please"])
    assert vocab == ("blue", "cube", "cylinder", "pick", "please", "red", "the", "up")
    for pooling in ("gru", "mean"):
        enc = WordEncoder(vocab, dim=8, pooling=pooling)
        assert enc.ids("pick up the pink block") == [4, 8, 7, 0, 0]  # pink and block are unknown: row 0
        out = enc(["pick up the red cube", "pick up the blue cube", "pick up the red cube"])
        assert out.shape == (3, 8)
        torch.testing.assert_close(out[0], out[2])
        assert not torch.allclose(out[0], out[1])
    with pytest.raises(ValueError, match="needs a vocabulary"):
        WordEncoder(())
    both = make_text_encoder("sentence+words", vocab=vocab, dim=8)
    assert both.dim == 384 + 8 and both(["pick up the red cube"]).shape == (1, 392)
    assert both.trainable and sum(p.numel() for p in both.parameters() if p.requires_grad) > 0


def test_train_builds_the_vocabulary_and_it_survives_save_and_load(tmp_path):
    data = tmp_path / "touch"
    collect(CollectConfig(env="vlagym/TabletopTouch-v0", episodes=3, out=str(data), workers=1,
                          env_kwargs={"image_size": 32}))
    cfg = TrainConfig(data=[str(data)], policy="bcz", out=str(tmp_path / "run"), steps=4, batch_size=4, num_workers=0,
                      eval_every=0, save_every=4, threads=1,
                      policy_overrides={"text_encoder": "words", "text_dim": 8, "hidden_dim": 16, "horizon": 2})
    train(cfg, progress=False)
    policy = load_policy(tmp_path / "run" / "best")
    from vlagym.dataio.dataset import index_demos

    words = {w for r in index_demos(data) for w in r.instruction.split()}
    assert set(policy.config.vocab) == words
    assert policy.text.vocab == policy.config.vocab
    obs = {"rgb": torch.zeros(32, 32, 3, dtype=torch.uint8).numpy(), "proprio": torch.zeros(6).numpy(),
           "instruction": "touch the pink dish"}  # unknown words still act
    again = load_policy(tmp_path / "run" / "best")
    assert (policy.act(obs) == again.act(obs)).all()
