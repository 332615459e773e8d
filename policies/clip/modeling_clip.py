"""CLIP fusion: open_clip vision and text towers, fused three ways, into an action-chunk head.

The towers come from ``open_clip.create_model`` (any architecture; a tiny one by default) and are
trained with the policy. The head predicts ``horizon`` future actions: continuous dimensions as
z-scores (Huber loss), gripper dimensions as logits (BCE), as in BC-Z; a discrete action space as n
class logits per step (cross-entropy, argmax when acting). With late or cross fusion an optional CLIP
contrastive loss ties each image to its instruction.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlagym.policies.base import Policy, StepModule, _Frame, mlp
from vlagym.policies.clip.configuration_clip import TINY_CLIP, CLIPConfig
from vlagym.policies.normalize import ActionCodec, ProprioNormalizer
from vlagym.policies.registry import register_policy
from vlagym.policies.vision import FiLM, ImageNormalize
from vlagym.vl.model import register_configs

logger = logging.getLogger(__name__)

def create_open_clip(config: CLIPConfig, load_pretrained: bool = True) -> nn.Module:
    """The open_clip model for ``config`` at the env's image size, with pretrained weights when asked
    for and available; otherwise from scratch, logged, and ``config.clip_pretrained`` set to None.

    Fills ``config.image_mean``/``image_std`` from the model's preprocessing config when unset.
    ``load_pretrained=False`` builds the architecture only (a checkpoint is loaded over it).
    """
    import open_clip

    if config.clip_model == TINY_CLIP:
        register_configs()
    if config.pretrained_vl and load_pretrained:
        from vlagym.vl.model import open_clip_for_policy

        return open_clip_for_policy(config)
    kwargs = dict(config.clip_model_cfg or {})
    kwargs["force_image_size"] = config.image_size
    if "vision_cfg" in kwargs:  # an override replaces the whole entry, force_image_size included
        kwargs["vision_cfg"] = {**kwargs["vision_cfg"], "image_size": list(config.image_size)}
    name, tag = config.clip_model, config.clip_pretrained
    model = None
    if tag and load_pretrained:
        try:
            model = open_clip.create_model(name, pretrained=tag, **kwargs)
            logger.info("loaded open_clip %s weights %r", name, tag)
        except Exception as e:  # download or file errors vary by source; the fallback is the same
            logger.warning(
                "could not load open_clip %s weights %r (%s); training the CLIP towers from scratch "
                "(config.clip_pretrained set to None)",
                name,
                tag,
                e,
            )
            config.clip_pretrained = None
    elif load_pretrained:
        logger.info(
            "open_clip %s: no pretrained weights requested (clip_pretrained=None); training the CLIP "
            "towers from scratch",
            name,
        )
    if model is None:
        model = open_clip.create_model(name, pretrained=None, **kwargs)
    pre = open_clip.get_model_preprocess_cfg(model)
    if config.image_mean is None:
        config.image_mean = tuple(float(v) for v in pre.get("mean", open_clip.OPENAI_DATASET_MEAN))
    if config.image_std is None:
        config.image_std = tuple(float(v) for v in pre.get("std", open_clip.OPENAI_DATASET_STD))
    return model


@register_policy("clip")
class CLIPPolicy(Policy):
    """CLIP-fusion policy (see the module and ``CLIPConfig`` docstrings)."""

    config_class = CLIPConfig

    def __init__(self, config: CLIPConfig, load_pretrained: bool = True) -> None:
        super().__init__(config)
        import open_clip

        cfg = config
        self.clip = create_open_clip(cfg, load_pretrained)
        self.tokenizer = open_clip.get_tokenizer(cfg.clip_model, **self._tokenizer_kwargs())
        self.normalize = ImageNormalize(cfg.image_mean, cfg.image_std)
        visual = self.clip.visual
        self._vit = hasattr(visual, "_embeds") and hasattr(getattr(visual, "transformer", None), "resblocks")
        if cfg.fusion in ("early", "cross") and not self._vit:
            raise ValueError(
                f"fusion={cfg.fusion!r} needs an open_clip VisionTransformer tower; {cfg.clip_model!r} "
                f"has {type(visual).__name__} (use fusion='late')"
            )
        if self._vit:
            patch = visual.patch_size
            if cfg.image_size[0] % patch[0] or cfg.image_size[1] % patch[1]:
                raise ValueError(
                    f"image_size {cfg.image_size} is not a multiple of {cfg.clip_model}'s patch size {patch}"
                )
        self.proprio_norm = ProprioNormalizer(cfg.stats["proprio"])
        self.codec = ActionCodec.from_config(cfg)
        embed_dim = int(visual.output_dim)  # open_clip gives both towers' projections this width
        out_dim = cfg.action_classes or self.codec.num_continuous + self.codec.num_gripper
        p = cfg.proprio_dim if cfg.use_proprio else 0
        if cfg.fusion == "early":
            width = visual.transformer.width
            self.films = nn.ModuleList(FiLM(embed_dim, width) for _ in visual.transformer.resblocks)
            self.trunk = mlp(embed_dim + p, cfg.fusion_dim, cfg.fusion_layers, cfg.dropout)
            self.head = nn.Linear(cfg.fusion_dim, cfg.horizon * out_dim)
        elif cfg.fusion == "late":
            self.trunk = mlp(2 * embed_dim + p, cfg.fusion_dim, cfg.fusion_layers, cfg.dropout)
            self.head = nn.Linear(cfg.fusion_dim, cfg.horizon * out_dim)
        else:
            d = cfg.fusion_dim
            self.vision_proj = nn.Linear(visual.transformer.width, d)
            self.text_proj = nn.Linear(self._text_width(), d)
            self.proprio_proj = nn.Linear(cfg.proprio_dim, d) if cfg.use_proprio else None
            self.type_embedding = nn.Parameter(torch.zeros(3, d))  # image, text, proprio
            self.queries = nn.Parameter(torch.zeros(1, cfg.horizon, d))
            nn.init.trunc_normal_(self.type_embedding, std=0.02)
            nn.init.trunc_normal_(self.queries, std=0.02)
            layer = nn.TransformerDecoderLayer(
                d, cfg.fusion_heads, 4 * d, cfg.dropout, activation="gelu", batch_first=True, norm_first=True
            )
            self.decoder = nn.TransformerDecoder(layer, cfg.fusion_layers, norm=nn.LayerNorm(d))
            self.head = nn.Linear(d, out_dim)
        self._text_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._frozen_text: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        if cfg.freeze_text:
            for name, param in self.clip.named_parameters():
                if not name.startswith("visual.") and name not in ("logit_scale", "logit_bias"):
                    param.requires_grad_(False)

    def _tokenizer_kwargs(self) -> dict[str, Any]:
        ctx = (self.config.clip_model_cfg or {}).get("text_cfg", {}).get("context_length")
        return {"context_length": ctx} if ctx else {}

    def _text_width(self) -> int:
        if hasattr(self.clip, "token_embedding"):
            return int(self.clip.token_embedding.embedding_dim)
        return int(self.clip.text.width)

    # --- towers ---------------------------------------------------------------------------------------------
    def encode_text(self, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Instructions -> pooled embedding ``(B, E)``, token features ``(B, L, Wt)``, padding ``(B, L)``.

        With ``freeze_text`` each distinct instruction is encoded once, without gradients, and cached.
        """
        if not self.config.freeze_text:
            return self._encode_text(instructions)
        cache = self._frozen_text
        new = [s for s in dict.fromkeys(instructions) if s not in cache]
        if new:
            with torch.no_grad():
                pooled, tokens, pad = self._encode_text(new)
            for i, s in enumerate(new):
                cache[s] = (pooled[i], tokens[i], pad[i])
        rows = [cache[s] for s in instructions]
        return tuple(torch.stack([r[k] for r in rows]).to(self.device) for k in range(3))

    def _encode_text(self, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from open_clip.transformer import text_global_pool

        ids = self.tokenizer(list(instructions)).to(self.device)
        m = self.clip
        if hasattr(m, "token_embedding"):  # CLIP with the built-in text Transformer
            x = m.token_embedding(ids) + m.positional_embedding
            x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))
            pooled = text_global_pool(x, ids, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
            if m.text_projection is not None:
                pooled = (
                    m.text_projection(pooled)
                    if isinstance(m.text_projection, nn.Linear)
                    else pooled @ m.text_projection
                )
            tokens = x
        else:  # a separate text tower (CustomTextCLIP)
            m.text.output_tokens = True
            pooled, tokens = m.text(ids)
        pad = ids == 0
        if tokens.shape[1] != ids.shape[1]:
            pad = pad.new_zeros(tokens.shape[:2])
        return pooled, tokens, pad

    def encode_image(
        self, images: torch.Tensor, text: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 ``(B, 3, H, W)`` -> pooled embedding ``(B, E)`` and patch tokens ``(B, N, Wv)`` (ViT towers).

        With early fusion, ``text`` (the pooled text embedding) FiLM-conditions every vision block.
        """
        x = self.normalize(images)
        visual = self.clip.visual
        if not self._vit:
            return visual(x), None
        x = visual._embeds(x)
        batch_first = getattr(visual.transformer, "batch_first", True)
        for i, block in enumerate(visual.transformer.resblocks):
            x = block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)
            if self.config.fusion == "early":
                x = self.films[i](x, text)
        pooled, tokens = visual._pool(x)
        if visual.proj is not None:
            pooled = pooled @ visual.proj
        return pooled, tokens

    # --- fusion and heads -----------------------------------------------------------------------------------
    def heads(
        self, images: torch.Tensor, proprio: torch.Tensor, text: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> continuous z-scores ``(B, horizon, Ac)``, gripper logits ``(B, horizon, Ag)``, and the pooled
        image and text embeddings (for the contrastive loss). With discrete actions the first is the class
        logits ``(B, horizon, n)`` and the second is empty."""
        cfg = self.config
        text_pooled, text_tokens, text_pad = text
        b = images.shape[0]
        if text_pooled.shape[0] != b:  # one instruction for the whole batch (acting)
            text_pooled, text_tokens, text_pad = (
                t.expand(b, *t.shape[1:]) for t in (text_pooled, text_tokens, text_pad)
            )
        prop = self.proprio_norm(proprio)
        img_pooled, patches = self.encode_image(images, text_pooled if cfg.fusion == "early" else None)
        if cfg.fusion == "cross":
            t = self.type_embedding
            memory = [self.vision_proj(patches) + t[0], self.text_proj(text_tokens) + t[1]]
            pad = [text_pad.new_zeros(patches.shape[:2]), text_pad]
            if self.proprio_proj is not None:
                memory.append((self.proprio_proj(prop) + t[2])[:, None])
                pad.append(text_pad.new_zeros(b, 1))
            out = self.decoder(
                self.queries.expand(b, -1, -1),
                torch.cat(memory, 1),
                memory_key_padding_mask=torch.cat(pad, 1),
            )
            raw = self.head(out)  # (B, horizon, Ac + Ag)
        else:
            feats = [img_pooled] if cfg.fusion == "early" else [img_pooled, text_pooled]
            if cfg.use_proprio:
                feats.append(prop)
            raw = self.head(self.trunk(torch.cat(feats, -1))).view(b, cfg.horizon, -1)
        nc = cfg.action_classes or self.codec.num_continuous
        return raw[..., :nc], raw[..., nc:], img_pooled, text_pooled

    def contrastive_loss(
        self, image: torch.Tensor, text: torch.Tensor, instructions: list[str]
    ) -> torch.Tensor:
        """Symmetric InfoNCE where every sample with the same instruction is a positive."""
        logits = self.clip.logit_scale.exp() * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
        ids = {s: i for i, s in enumerate(dict.fromkeys(instructions))}
        labels = torch.tensor([ids[s] for s in instructions], device=logits.device)
        positive = (labels[:, None] == labels[None, :]).float()
        target = positive / positive.sum(1, keepdim=True)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))

    # --- batches --------------------------------------------------------------------------------------------
    def _batch_heads(self, batch: dict[str, Any]):
        images = self._batch_images(batch)[:, -1]
        proprio = batch["proprio"][:, -1].to(self.device, torch.float32)
        return self.heads(images, proprio, self.encode_text(list(batch["instruction"])))

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        cont, grip, img, txt = self._batch_heads(batch)
        actions, mask = self._batch_actions(batch)
        cfg = self.config
        if cfg.action_classes:
            loss, logs = self.codec.class_loss(cont, actions, mask)
        else:
            loss, logs = self.codec.chunk_loss(cont, grip, actions, mask, cfg.huber_delta, cfg.gripper_weight)
        if cfg.contrastive_weight > 0 and cfg.fusion != "early":
            con = self.contrastive_loss(img, txt, list(batch["instruction"]))
            loss = loss + cfg.contrastive_weight * con
            logs.update(contrastive=float(con.detach()), loss=float(loss.detach()))
        return loss, logs

    @torch.no_grad()
    def predict(self, batch: dict[str, Any]) -> torch.Tensor:
        cont, grip, _, _ = self._batch_heads(batch)
        return self._decode(cont, grip)

    def _decode(self, cont: torch.Tensor, grip: torch.Tensor) -> torch.Tensor:
        if self.config.action_classes:
            return self.codec.decode_classes(cont)
        return self.codec.decode(cont, grip)

    def reset(self) -> None:
        super().reset()
        self._text_cache = None

    # --- the per-step network -------------------------------------------------------------------------------
    def step_module(self) -> CLIPStep:
        return CLIPStep(self)

    def step_inputs(self, frame: _Frame) -> dict[str, torch.Tensor]:
        if self._text_cache is None:  # the instruction is fixed within an episode
            self._text_cache = self.encode_text([frame.instruction])
        pooled, tokens, pad = self._text_cache
        return {"image": frame.image[None], "proprio": frame.proprio[None], "text_pooled": pooled,
                "text_tokens": tokens, "text_pad": pad}

    def finish_step(self, outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        raw = outputs[0]
        nc = self.config.action_classes or self.codec.num_continuous
        return self._decode(raw[..., :nc], raw[..., nc:])[0]


class CLIPStep(StepModule):
    """CLIP fusion's decision: the current uint8 ``image`` ``(1, 3, H, W)``, raw ``proprio`` ``(1, P)`` and
    the instruction's cached text-tower outputs (``text_pooled`` ``(1, E)``, ``text_tokens`` ``(1, L, Wt)``,
    bool ``text_pad`` ``(1, L)``) -> ``raw``: continuous z-scores and gripper logits joined, ``(1, horizon,
    Ac + Ag)`` (discrete actions: class logits ``(1, horizon, n)``)."""

    def __init__(self, policy: CLIPPolicy) -> None:
        super().__init__(policy, ("image", "proprio", "text_pooled", "text_tokens", "text_pad"), ("raw",))

    def forward(self, image: torch.Tensor, proprio: torch.Tensor, text_pooled: torch.Tensor,
                text_tokens: torch.Tensor, text_pad: torch.Tensor) -> tuple[torch.Tensor]:
        cont, grip, _, _ = self.policy.heads(image, proprio, (text_pooled, text_tokens, text_pad))
        return (torch.cat([cont, grip], dim=-1),)
