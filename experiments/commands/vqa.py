"""Visual question answering commands: vqa-data, vqa-train, nsvqa-train, vqa-eval, vqa-plot, vqa-export, vqa-fewshot."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vlagym.core.splits import SPLIT_SEED_START
from vlagym.experiments.commands.args import Command, Flag, add_config, honour_trust_pickle, trust_pickle_flag


@dataclass
class VQAEvalConfig:
    """Settings of ``vlagym vqa-eval``."""

    model: str
    """vqa-train or nsvqa-train run folder (or its model/ folder)."""
    data: str
    """vqa-data folder to answer (held-out scenes: --split test)."""
    out: str | None = None
    """Write the report JSON here (default: print only)."""
    device: str = "auto"
    """auto, cpu or cuda."""


@dataclass
class VQAPlotConfig:
    """Settings of ``vlagym vqa-plot``."""

    reports: list[str]
    """vqa-eval --out reports, or vqa-train / nsvqa-train run folders (their final held-out evaluation)."""
    out: str
    """PNG to write."""
    labels: list[str] | None = None
    """Legend label per report (default: each report's folder or file name)."""
    title: str = ""
    """Plot title."""


@dataclass
class VQAExportConfig:
    """Settings of ``vlagym vqa-export``."""

    data: str
    """vqa-data folder."""
    format: Literal["coco", "vg"]
    """coco: captions.json + instances.json (COCO captions and detection); vg: Visual Genome scene graphs."""
    out: str
    """Output folder (the JSON files and images/ with one PNG per image)."""


def _table(res: dict) -> str:
    rows = [f"{'family':<18} {'model':>7} {'blind':>7} {'n':>6}"]
    blind = res.get("blind", {}).get("per_family", {})
    for fam, r in res["model"]["per_family"].items():
        b = blind.get(fam, {}).get("accuracy")
        rows.append(f"{fam:<18} {r['accuracy']:>7.1%} {'' if b is None else f'{b:.1%}':>7} {r['n']:>6}")
    b = res.get("blind", {}).get("accuracy")
    rows.append(f"{'overall':<18} {res['model']['accuracy']:>7.1%} {'' if b is None else f'{b:.1%}':>7} "
                f"{res['model']['n']:>6}")
    return "\n".join(rows)


# --- vqa-data -------------------------------------------------------------------------------------------------
def _vqa_data_args(s) -> None:
    from vlagym.vl.vqa_data import VQADataConfig

    # families and levels are checked by VQADataConfig (a list field's Flag.choices would compare the whole list).
    add_config(s, VQADataConfig, flags={"split": Flag(choices=sorted(SPLIT_SEED_START))}, overrides=False)
    s.set_defaults(func=cmd_vqa_data)


def cmd_vqa_data(args) -> int:
    from vlagym.experiments.commands.args import env_ids
    from vlagym.vl.vqa_data import VQADataConfig, make_vqa_data

    values = dict(args.config_values)
    if values.get("env"):
        values["env"] = env_ids(values["env"])
    info = make_vqa_data(VQADataConfig(**values))
    print(f"{info['questions']} questions about {info['scenes']} images in {args.out} "
          f"(splits {info['splits']}, levels {info['levels']})")
    for fam, answers in info["answers"].items():
        print(f"  {fam}: {sum(answers.values())} questions, {len(answers)} answers")
    return 0


# --- vqa-train ------------------------------------------------------------------------------------------------
def _vqa_train_args(s) -> None:
    from vlagym.vl.vqa import VQAConfig

    add_config(s, VQAConfig)
    trust_pickle_flag(s, "a resume to unpickle a checkpoint.pt that torch.load(weights_only=True) refuses")
    s.set_defaults(func=cmd_vqa_train)


def cmd_vqa_train(args) -> int:
    from vlagym.vl.vqa import VQAConfig, train_vqa

    honour_trust_pickle(args)
    cfg = VQAConfig(**args.config_values)
    m = train_vqa(cfg)
    if "final" in m:
        print(_table(m["final"]))
    print(f"model: {Path(cfg.out) / 'model'}")
    return 0


# --- nsvqa-train ----------------------------------------------------------------------------------------------
def _nsvqa_train_args(s) -> None:
    from vlagym.vl.nsvqa import NSVQAConfig

    add_config(s, NSVQAConfig)
    trust_pickle_flag(s, "a resume to unpickle a checkpoint.pt that torch.load(weights_only=True) refuses")
    s.set_defaults(func=cmd_nsvqa_train)


def cmd_nsvqa_train(args) -> int:
    from vlagym.vl.nsvqa import NSVQAConfig, train_nsvqa

    honour_trust_pickle(args)
    cfg = NSVQAConfig(**args.config_values)
    m = train_nsvqa(cfg)
    if "final" in m:
        print(_table(m["final"]))
        print(_parts(m["final"]["parts"]))
    print(f"model: {Path(cfg.out) / 'model'}")
    return 0


def _parts(parts: dict) -> str:
    s = parts["scene_parser"]
    return (f"scene parser: precision {s['precision']:.1%}, recall {s['recall']:.1%}, "
            f"colour {s['color_accuracy']:.1%}, shape {s['shape_accuracy']:.1%}, size {s['size_accuracy']:.1%}, "
            f"whole scene right {s['scene_exact']:.1%}"
            f"\nprogram parser: exact match {parts['program_exact_match']:.1%}"
            f"\nanswers with the true scene {parts['answers_with_true_scene']:.1%}, "
            f"with the true program {parts['answers_with_true_program']:.1%}")


# --- vqa-eval -------------------------------------------------------------------------------------------------
def _vqa_eval_args(s) -> None:
    add_config(s, VQAEvalConfig, overrides=False)
    s.set_defaults(func=cmd_vqa_eval)


def cmd_vqa_eval(args) -> int:
    from vlagym.core.io import atomic_write_text
    from vlagym.vl.nsvqa import eval_nsvqa, is_nsvqa
    from vlagym.vl.vqa import eval_vqa

    ns = is_nsvqa(args.model)
    res = (eval_nsvqa if ns else eval_vqa)(args.model, args.data, args.device)
    print(_table(res))
    if ns:
        print(_parts(res["parts"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out), json.dumps(res, indent=2))
        print(f"report: {args.out}")
    return 0


# --- vqa-plot -------------------------------------------------------------------------------------------------
def _vqa_plot_args(s) -> None:
    add_config(s, VQAPlotConfig, flags={"reports": Flag(positional=True)}, overrides=False)
    s.set_defaults(func=cmd_vqa_plot)


def cmd_vqa_plot(args) -> int:
    from vlagym.experiments.vqa_plot import plot_families
    from vlagym.vl.vqa import read_report

    labels = args.labels or [Path(r).stem if Path(r).is_file() else Path(r).name for r in args.reports]
    if len(labels) != len(args.reports):
        raise ValueError(f"--labels gives {len(labels)} labels for {len(args.reports)} reports")
    if len(set(labels)) != len(labels):
        raise ValueError(f"--labels must differ from each other, got {labels}")
    path = plot_families({lab: read_report(r) for lab, r in zip(labels, args.reports)}, args.out, args.title)
    print(f"plot: {path}")
    return 0


# --- vqa-export -----------------------------------------------------------------------------------------------
def _vqa_export_args(s) -> None:
    add_config(s, VQAExportConfig, overrides=False)
    s.set_defaults(func=cmd_vqa_export)


def cmd_vqa_export(args) -> int:
    from vlagym.vl.vqa_data import export_coco, export_vg, load_vqa_data

    data = load_vqa_data(args.data)
    paths = (export_coco if args.format == "coco" else export_vg)(data, args.out)
    print(f"{args.format}: " + ", ".join(str(p) for p in paths.values()))
    return 0


# --- vqa-fewshot ---------------------------------------------------------------------------------------------
def _vqa_fewshot_args(s) -> None:
    from vlagym.vl.fewshot import FewShotConfig

    add_config(s, FewShotConfig)
    s.set_defaults(func=cmd_vqa_fewshot)


def cmd_vqa_fewshot(args) -> int:
    from vlagym.vl.fewshot import FewShotConfig, train_fewshot

    cfg = FewShotConfig(**args.config_values)
    res = train_fewshot(cfg)
    print(f"held-out family {res['held_out']}: " + ", ".join(
        f"{c['shots']} shots {c['accuracy']:.1%} open, {c['accuracy_options']:.1%} of {len(c['options'])} options "
        f"(n={c['n']})" for c in res["curve"]))
    print(f"curve: {Path(cfg.out) / 'fewshot.json'}")
    return 0


COMMANDS = [
    Command("vqa-data", "CLEVR-style questions, programs and answers about tabletop images",
            "Render tabletop images (or reuse a vl-data folder with --source) and ask questions generated as "
            "functional programs over each image's scene graph: exist, count, query colour/shape/size, compare, "
            "spatial relations as seen from the camera, relation counts, what is in the bowl. Answers are "
            "balanced within each family. Writes scenes.json and questions.json (scene, question, program, "
            "answer, family, seed split, level).", _vqa_data_args),
    Command("vqa-train", "train a VQA answer classifier on the vl towers",
            "Train an answer classifier over the vl vision and text towers with early, late or cross-attention "
            "fusion on vqa-data; report accuracy per question family on held-out scenes beside the blind "
            "question-only prior. key=value overrides set VQAConfig fields. Rerun to resume.", _vqa_train_args),
    Command("nsvqa-train", "train a neuro-symbolic VQA model (scene parser, program parser, executor)",
            "Train NS-VQA on vqa-data: a convolutional scene parser that finds each object and reads its colour, "
            "shape, size, bowl and camera-frame position, supervised by the simulator's masks and object records; "
            "and a GRU encoder-decoder from the question's words to its program. The executor runs the predicted "
            "program on the predicted scene. key=value overrides set NSVQAConfig fields. Rerun to resume.",
            _nsvqa_train_args),
    Command("vqa-eval", "per-family VQA accuracy of a trained model",
            "Answer a vqa-data folder's questions with a vqa-train or nsvqa-train model; print accuracy per family "
            "and overall beside the blind question-only prior of its training data (and, for NS-VQA, each part "
            "on its own).", _vqa_eval_args),
    Command("vqa-plot", "VQA accuracy per question family, several models beside the blind prior",
            "Draw a bar chart of held-out accuracy per question family (and overall) for one or more vqa-eval "
            "reports or vqa-train / nsvqa-train runs, with the first one's blind question-only prior.",
            _vqa_plot_args),
    Command("vqa-export", "export vqa-data as COCO captions/instances or Visual Genome scene graphs",
            "Write a vqa-data folder's captions and boxes in COCO format (captions.json, instances.json) or its "
            "scene graphs, attributes and question-answers in Visual Genome's format, with PNG images.",
            _vqa_export_args),
    Command("vqa-fewshot", "Flamingo-style few-shot VQA on a held-out question family",
            "Train a Perceiver resampler on the vision tower and gated cross-attention into a small language model "
            "on interleaved image-question-answer sequences of every family but held_out; report accuracy on the "
            "held-out family's questions about held-out scenes with 0, 4 and 8 examples in context. key=value "
            "overrides set FewShotConfig fields.", _vqa_fewshot_args),
]
