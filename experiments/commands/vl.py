"""Vision-language commands: vl-data, vl-train, vl-ground, ground."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vlagym.core.splits import SPLIT_SEED_START
from vlagym.experiments.commands.args import Command, Flag, add_config, env_ids, honour_trust_pickle, trust_pickle_flag


@dataclass
class GroundConfig:
    """Settings of ``vlagym ground``."""

    model: str
    """vl-train run folder (or a grounding/ or model/ folder)."""
    image: str
    """Input image (PNG, JPEG)."""
    query: str
    """Referring expression, e.g. 'the small yellow cylinder'."""
    out: str = "ground.png"
    """Output PNG."""
    scale: int = 4
    """Upscaling of the drawn image."""


# --- vl-data ------------------------------------------------------------------------------------------------
def _vl_data_args(s) -> None:
    from vlagym.vl.data import CAMERAS, VLDataConfig

    add_config(s, VLDataConfig, flags={"split": Flag(choices=sorted(SPLIT_SEED_START)),
                                       "cameras": Flag(choices=CAMERAS), "env_kwargs": Flag(aliases=("--kwargs",))},
               overrides=False)
    s.set_defaults(func=cmd_vl_data)


def cmd_vl_data(args) -> int:
    from vlagym.vl.data import VLDataConfig, make_vl_data

    cfg = VLDataConfig(**{**args.config_values, "env": env_ids(args.env)})
    m = make_vl_data(cfg)
    print(f"{m['images']} images ({m['per_camera']}), {m['captions']} captions in {args.out}; "
          f"seeds {m['seed_range'][0]}..{m['seed_range'][1]} ({m['split']})")
    return 0


# --- vl-train -----------------------------------------------------------------------------------------------
def _vl_train_args(s) -> None:
    from vlagym.vl.train import VLTrainConfig

    add_config(s, VLTrainConfig)
    trust_pickle_flag(s, "a resume to unpickle a checkpoint.pt that torch.load(weights_only=True) refuses")
    s.set_defaults(func=cmd_vl_train)


def cmd_vl_train(args) -> int:
    from vlagym.vl.train import VLTrainConfig, train_vl

    honour_trust_pickle(args)
    cfg = VLTrainConfig(**args.config_values)
    m = train_vl(cfg)
    for row in ("zero_shot", "final"):
        if row in m:
            print(f"{row}: " + ", ".join(f"{k}={v}" for k, v in m[row].items()))
    print(f"model: {Path(cfg.out) / 'model'}")
    return 0


# --- vl-ground ----------------------------------------------------------------------------------------------
def _vl_ground_args(s) -> None:
    from vlagym.vl.grounding import GroundingConfig

    s.add_argument("--model", required=True, help="vl-train run or model folder")
    s.add_argument("--data", required=True, help="training vl-data folder")
    s.add_argument("--eval-data", default=None, help="held-out vl-data folder")
    s.add_argument("--out", default=None, help="head folder (default: grounding/ beside the model)")
    add_config(s, GroundingConfig)
    s.set_defaults(func=cmd_vl_ground)


def cmd_vl_ground(args) -> int:
    from vlagym.vl.grounding import GroundingConfig, train_grounding
    from vlagym.vl.model import resolve_model_dir

    model_dir = resolve_model_dir(args.model)
    out = args.out or str(model_dir.parent / "grounding")
    res = train_grounding(model_dir, args.data, args.eval_data, out, GroundingConfig(**args.config_values))
    if "eval" in res:
        print("grounding: " + json.dumps(res["eval"]))
    print(f"head: {out}")
    return 0


# --- ground -------------------------------------------------------------------------------------------------
def _ground_args(s) -> None:
    add_config(s, GroundConfig)
    s.set_defaults(func=cmd_ground)


def cmd_ground(args) -> int:
    import numpy as np
    from PIL import Image

    from vlagym.vl.grounding import Grounder, draw

    if not Path(args.image).exists():
        raise FileNotFoundError(f"no image at {args.image}")
    image = np.asarray(Image.open(args.image).convert("RGB"))
    g = Grounder(args.model)
    res = g.locate(image, args.query)
    draw(image, res, args.query, scale=args.scale).save(args.out)
    where = f"box {[round(v, 1) for v in res['box']]} (score {res['score']:.2f})" if res["box"] else \
        "similarity map only (no grounding head next to this model)"
    print(f"{args.query!r}: {where} -> {args.out}")
    return 0


COMMANDS = [
    Command("vl-data", "render captioned tabletop images for vision-language",
            "Render tabletop scenes (random arm poses and object layouts; front and wrist cameras) and write "
            "image-caption pairs: true captions from templates, object boxes and masks from PyBullet's "
            "segmentation and referring expressions. Rerun the same command to resume.", _vl_data_args),
    Command("vl-train", "contrastive pre-training of an open_clip model",
            "Train or fine-tune an open_clip model (a small ViT by default) on vl-data pairs with the symmetric "
            "InfoNCE loss, learned temperature and optional hard negatives; evaluate Recall@1/5/10, MRR and an "
            "attribute-binding probe on held-out scenes against the starting point. key=value overrides set "
            "VLTrainConfig fields (steps=300 hard_negatives=false model_cfg.vision_cfg.width=96 ...). Rerun to "
            "resume.", _vl_train_args),
    Command("vl-ground", "train and evaluate the grounding head",
            "Over a frozen vl-train model, train the small head that turns the patch-text similarity map into a "
            "match map and a box, on vl-data boxes and masks; report pointing accuracy (similarity map and head) "
            "and detection F1 at IoU 0.5 on held-out scenes.", _vl_ground_args),
    Command("ground", "locate a referring expression in an image",
            "Draw the heat map and box for a query such as 'the small yellow cylinder' on an image, with a "
            "vl-train run (its grounding/ head when present).", _ground_args),
]
