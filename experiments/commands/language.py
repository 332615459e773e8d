"""Language commands: caption-train, caption, parse-train, parse."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from vlagym.experiments.commands.args import Command, Flag, add_config


@dataclass
class CaptionConfig:
    """Settings of ``vlagym caption``."""

    model: str
    """caption-train run folder."""
    image: str
    """Input image (PNG, JPEG), resized to the vision tower's size."""


@dataclass
class ParseConfig:
    """Settings of ``vlagym parse``."""

    model: str
    """parse-train run folder."""
    text: list[str] = field(default_factory=list)
    """Instructions to parse, e.g. 'put the red cube in the blue bowl'."""
    env: str = ""
    """An env id instead: parse the instruction of its reset at --seed, with and without its scene (the
    scene-grounded parse), beside the true slots."""
    seed: int = 0
    """The reset's seed (with --env)."""
    level: str = ""
    """The reset's generalization level, e.g. L4 (with --env; empty: the env's default)."""


# --- caption-train ------------------------------------------------------------------------------------------
def _caption_train_args(s) -> None:
    from vlagym.vl.captioner import TARGETS, CaptionTrainConfig

    add_config(s, CaptionTrainConfig, flags={"targets": Flag(choices=TARGETS)})
    s.set_defaults(func=cmd_caption_train)


def cmd_caption_train(args) -> int:
    from vlagym.vl.captioner import CaptionTrainConfig, train_captioner

    cfg = CaptionTrainConfig(**args.config_values)
    r = train_captioner(cfg)
    if "eval" in r:
        for name in ("captioner", "template_prior"):
            m = r["eval"][name]
            print(f"{name}: BLEU-4 {m['bleu4']} ROUGE-L {m['rouge_l']} CIDEr-D {m['cider_d']} ({m['images']} images)")
        print(f"BLEU: {r['eval']['captioner']['bleu_signature']}")
    print(f"captioner: {cfg.out}")
    return 0


def _caption_args(s) -> None:
    add_config(s, CaptionConfig)
    s.set_defaults(func=cmd_caption)


def cmd_caption(args) -> int:
    import numpy as np
    from PIL import Image

    from vlagym.vl.captioner import load_captioner

    if not Path(args.image).exists():
        raise FileNotFoundError(f"no image at {args.image}")
    c = load_captioner(args.model)
    size = c.vl.image_size
    image = np.asarray(Image.open(args.image).convert("RGB").resize((size, size), Image.BILINEAR))
    print(c.caption(image[None])[0])
    return 0


# --- parse-train --------------------------------------------------------------------------------------------
def _parse_train_args(s) -> None:
    from vlagym.vl.parser import ParseTrainConfig

    add_config(s, ParseTrainConfig)
    s.set_defaults(func=cmd_parse_train)


def cmd_parse_train(args) -> int:
    from vlagym.vl.parser import PARSE_LEVELS, ParseTrainConfig, run_parse_train

    r = run_parse_train(ParseTrainConfig(**args.config_values))
    for name in ("learned", "learned_scene", "template_rules"):
        for level in PARSE_LEVELS:
            m = r[name].get(level)
            if m:
                g = f", grounded id {m['grounded_id_acc']:.1%}" if "grounded_id_acc" in m else ""
                print(f"{name} {level}: exact match {m['exact_match']:.1%}, slot F1 {m['slot_f1']:.3f}{g} "
                      f"({m['n']} instructions)")
    if "val_learned" in r:
        val = r["val_learned"]
        print("learned, validation seeds: " + ", ".join(f"{lv} {val[lv]['exact_match']:.1%}" for lv in PARSE_LEVELS))
        val = r["val_learned_scene"]
        print("learned_scene, validation seeds: " + ", ".join(f"{lv} {val[lv]['exact_match']:.1%}"
                                                               for lv in PARSE_LEVELS))
    print(f"parser: {args.out}")
    return 0


def _parse_args(s) -> None:
    add_config(s, ParseConfig)
    s.set_defaults(func=cmd_parse)


def cmd_parse(args) -> int:
    from vlagym.vl.parser import InstructionParser

    if bool(args.text) == bool(args.env):
        raise SystemExit("vlagym parse: give instructions (--text ...) or an env reset (--env ID --seed N), "
                         "not both and not neither")
    p = InstructionParser.load(args.model)
    if args.text:
        for text, parse in zip(args.text, p.parse(args.text)):
            print(f"{text!r}: {json.dumps(parse)}")
        return 0
    import gymnasium as gym

    from vlagym.envs import check_env_id
    from vlagym.vl.parser import reset_pair

    check_env_id(args.env)
    env = gym.make(args.env, obs_mode="state", **({"level": args.level} if args.level else {}))
    try:
        pair = reset_pair(env, args.seed)
    finally:
        env.close()
    text, scene, truth = pair["instruction"], pair["scene"], pair["slots"]
    print(f"instruction: {text!r}")
    print("scene: " + ", ".join(f"{o['color']} {o['shape']}" if "shape" in o else
                                 f"a {o['furniture']}" if "furniture" in o else f"a {o['door']} door" for o in scene))
    plain, grounded = p.parse([text])[0], p.parse([text], [scene])[0]
    for name, parse in (("text only", plain), ("scene-grounded", grounded)):
        print(f"{name}: {json.dumps(parse)} ({'right' if parse == truth else 'wrong'})")
    print(f"true slots: {json.dumps(truth)}")
    return 0


COMMANDS = [
    Command("caption-train", "train and evaluate the image captioner",
            "Train a small Transformer decoder over a vl-train model's vision tower (frozen by default) or a fresh "
            "one, on vl-data captions; report BLEU-4 (sacrebleu), ROUGE-L and CIDEr-D on held-out scenes beside "
            "the template prior (the most frequent training caption).", _caption_train_args),
    Command("caption", "caption an image", "Greedy caption of an image with a caption-train run.", _caption_args),
    Command("parse-train", "train and evaluate the instruction parser",
            "Make (instruction, slots) pairs from env resets (training level on training seeds; L1-L4 on test "
            "seeds), train the parser (heads on frozen MiniLM features) and report exact match, slot F1 and the "
            "scene-grounded object id per level, beside a rule baseline of memorised training templates.",
            _parse_train_args),
    Command("parse", "parse instructions", "Task, object and destination slots of instructions, with a parse-train "
            "run.", _parse_args),
]
