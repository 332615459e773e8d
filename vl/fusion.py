"""BLIP's other two pre-training objectives beside the contrastive loss: image-text matching (ITM) with hard
negatives and masked language modelling (MLM), through a small fusion encoder (``vlagym vl-train itm=true
mlm=true``).

The fusion encoder is a bidirectional Transformer over the text tower's token outputs followed by the image's
pooled and patch embeddings (``VLModel.patch_features``), each projected to one width with a type embedding.

* ITM: the fused start-of-text token says whether the caption is true of the image. Each batch gives every
  image its caption (a match) and two non-matches: the caption's hard negative (one colour, shape, relation
  word or binding changed, false of the scene: ``vlagym.vl.captions.hard_negatives``) when there is one, and
  the image that the contrastive similarity ranks highest for the caption among those the caption's fact is
  false of (``holds``), as BLIP mines its negatives from the contrastive scores.
* MLM: 30% of a caption's word-piece tokens (at least one) enter the text tower as a learned mask embedding; the
  fusion encoder predicts them over the word pieces of the captions' vocabulary (colours, shapes, relations).

Both train the towers through the fusion encoder; the saved open_clip model keeps the towers only.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlagym.vl.captions import Fact, ObjectView, holds
from vlagym.vl.model import VLModel

MASK_PROB = 0.3


def text_tokens(vl: VLModel, tokens: torch.Tensor, mask: torch.Tensor | None = None,
                mask_embedding: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """open_clip's ``encode_text`` that also returns the token outputs: pooled ``(B, E)``, tokens ``(B, L, W)``.

    ``mask`` ``(B, L)`` marks positions whose input embedding becomes ``mask_embedding``."""
    from open_clip.transformer import text_global_pool

    clip = vl.clip
    if not hasattr(clip, "token_embedding"):
        raise ValueError(f"ITM and MLM need open_clip's built-in text tower; {vl.arch} has a custom one")
    cast = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tokens).to(cast)
    if mask is not None:
        x = torch.where(mask[..., None], mask_embedding.to(cast), x)
    x = x + clip.positional_embedding.to(cast)
    x = clip.transformer(x, attn_mask=clip.attn_mask)
    x = clip.ln_final(x)
    pooled = text_global_pool(x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
    if clip.text_projection is not None:
        pooled = clip.text_projection(pooled) if isinstance(clip.text_projection, nn.Linear) else \
            pooled @ clip.text_projection
    return pooled, x


class FusionEncoder(nn.Module):
    """Text tokens ``(B, L, W)`` + image tokens ``(B, N, E)`` -> ITM logits ``(B, 2)`` and MLM logits
    ``(B, L, V)`` over the compact vocabulary ``vocab`` (open_clip token ids)."""

    def __init__(self, text_width: int, image_width: int, vocab: list[int], width: int = 128, layers: int = 2,
                 heads: int = 4) -> None:
        super().__init__()
        self.text_in, self.image_in = nn.Linear(text_width, width), nn.Linear(image_width, width)
        self.modality = nn.Parameter(torch.zeros(2, width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.itm = nn.Linear(width, 2)
        self.mlm = nn.Linear(width, len(vocab))
        self.mask_embedding = nn.Parameter(torch.zeros(text_width))
        nn.init.normal_(self.mask_embedding, std=0.02)
        self.register_buffer("vocab", torch.tensor(sorted(vocab)), persistent=True)
        lookup = torch.full((int(max(vocab)) + 1,), -100, dtype=torch.long)
        lookup[self.vocab] = torch.arange(len(self.vocab))
        self.register_buffer("lookup", lookup, persistent=False)

    def forward(self, text: torch.Tensor, pad: torch.Tensor, image: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.text_in(text) + self.modality[0]
        v = self.image_in(image) + self.modality[1]
        keep_out = torch.cat([pad, torch.zeros(image.shape[:2], dtype=torch.bool, device=pad.device)], 1)
        h = self.norm(self.encoder(torch.cat([t, v], 1), src_key_padding_mask=keep_out))
        return self.itm(h[:, 0]), self.mlm(h[:, : text.shape[1]])

    def targets(self, tokens: torch.Tensor) -> torch.Tensor:
        """Compact vocabulary indices of open_clip token ids (-100, ignored, outside it)."""
        inside = tokens.clamp(max=len(self.lookup) - 1)
        out = self.lookup[inside]
        return torch.where(tokens < len(self.lookup), out, torch.full_like(out, -100))


def caption_vocab(vl: VLModel, captions: list[str]) -> list[int]:
    tokens = vl.tokenizer(captions)
    return sorted(set(tokens.flatten().tolist()) - {0})


def word_mask(tokens: torch.Tensor, rng: np.random.Generator, sot: int, eot: int, prob: float = MASK_PROB
              ) -> torch.Tensor:
    """``(B, L)`` mask over the word pieces between start and end of text, at least one per caption."""
    inner = (tokens != 0) & (tokens != sot) & (tokens != eot)
    draw = torch.from_numpy(rng.random(tuple(tokens.shape)) < prob)
    mask = inner & draw
    for b in range(len(tokens)):
        if not mask[b].any():
            cand = torch.nonzero(inner[b]).flatten()
            if len(cand):
                mask[b, cand[int(rng.integers(len(cand)))]] = True
    return mask


def hardest_false_images(sim: torch.Tensor, facts: list[Fact], objects: list[list[ObjectView]]) -> list[int | None]:
    """For each caption (row of ``sim``, texts x images), the highest-scoring image its fact is false of."""
    out: list[int | None] = []
    order = torch.argsort(sim, dim=1, descending=True).tolist()
    for i, fact in enumerate(facts):
        out.append(next((j for j in order[i] if j != i and not holds(fact, objects[j], visible_only=False,
                                                                     margin=None)), None))
    return out


def itm_mlm_losses(vl: VLModel, fusion: FusionEncoder, patches: torch.Tensor, texts: list[str],
                   details: dict, img_emb: torch.Tensor, txt_emb: torch.Tensor, rng: np.random.Generator,
                   itm: bool, mlm: bool) -> dict[str, torch.Tensor]:
    """The ITM and/or MLM losses of one batch: ``patches`` ``(B, N, E)`` and ``img_emb`` ``(B, E)`` from
    ``VLModel.patch_features``, ``txt_emb`` the captions' (then the hard negatives') embeddings, ``details``
    from ``sample_batch(..., details=True)``."""
    dev = vl.device
    image_tokens = torch.cat([img_emb[:, None], patches], 1)
    out: dict[str, torch.Tensor] = {}
    tok = vl.tokenizer(list(texts)).to(dev)
    sot, eot = int(tok[0, 0]), int(vl.tokenizer.eot_token_id) if hasattr(vl.tokenizer, "eot_token_id") else \
        int(tok[0][tok[0] != 0][-1])
    if itm:
        negs, owners = details["negatives"], details["owners"]
        with torch.no_grad():
            sim = F.normalize(txt_emb[: len(texts)], dim=-1) @ F.normalize(img_emb, dim=-1).T
        hard_img = hardest_false_images(sim.cpu(), details["facts"], details["objects"])
        all_text = list(texts) + list(negs) + [texts[i] for i, j in enumerate(hard_img) if j is not None]
        img_rows = list(range(len(texts))) + list(owners) + [j for j in hard_img if j is not None]
        labels = torch.tensor([1] * len(texts) + [0] * (len(all_text) - len(texts)), device=dev)
        t_all = vl.tokenizer(all_text).to(dev)
        _, t_tokens = text_tokens(vl, t_all)
        logits, _ = fusion(t_tokens, t_all == 0, image_tokens[img_rows])
        out["itm"] = F.cross_entropy(logits, labels)
        out["itm_acc"] = (logits.argmax(-1) == labels).float().mean().detach()
    if mlm:
        mask = word_mask(tok.cpu(), rng, sot, eot).to(dev)
        _, m_tokens = text_tokens(vl, tok, mask, fusion.mask_embedding)
        _, logits = fusion(m_tokens, tok == 0, image_tokens)
        target = torch.where(mask, fusion.targets(tok), torch.full_like(tok, -100))
        out["mlm"] = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)
        with torch.no_grad():
            sel = target != -100
            out["mlm_acc"] = (logits.argmax(-1)[sel] == target[sel]).float().mean()
    return out
