"""Embodied question answering commands: eqa-data, eqa-train, eqa-eval."""

from __future__ import annotations

from vlagym.core.splits import SPLIT_SEED_START
from vlagym.experiments.commands.args import Command, Flag, add_config


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


# --- eqa-data -----------------------------------------------------------------------------------------------
def _eqa_data_args(s) -> None:
    from vlagym.vl.eqa import EQADataConfig

    add_config(s, EQADataConfig, flags={"split": Flag(choices=sorted(SPLIT_SEED_START))})
    s.set_defaults(func=cmd_eqa_data)


def cmd_eqa_data(args) -> int:
    from vlagym.vl.eqa import EQADataConfig, make_eqa_data

    m = make_eqa_data(EQADataConfig(**args.config_values))
    print(f"{m['episodes']} episodes ({m['dropped']} dropped) in {args.out}; seeds {m['seed_range'][0]}.."
          f"{m['seed_range'][1]} ({m['split']})")
    return 0


# --- eqa-train ----------------------------------------------------------------------------------------------
def _eqa_train_args(s) -> None:
    from vlagym.vl.eqa import EQATrainConfig

    add_config(s, EQATrainConfig)
    s.set_defaults(func=cmd_eqa_train)


def cmd_eqa_train(args) -> int:
    from vlagym.vl.eqa import EQATrainConfig, train_answerer

    r = train_answerer(EQATrainConfig(**args.config_values))
    for row in ("train", "eval"):
        if row in r:
            lo, hi = r[row]["ci95"]
            print(f"{row}: accuracy {_pct(r[row]['accuracy'])} ({_pct(lo)}-{_pct(hi)}) on {r[row]['n']}")
    print(f"answerer: {args.out} ({r['cpu_s']} CPU s)")
    return 0


# --- eqa-eval -----------------------------------------------------------------------------------------------
def _eqa_eval_args(s) -> None:
    from vlagym.agents.eqa import EQAEvalConfig

    add_config(s, EQAEvalConfig, flags={"split": Flag(choices=sorted(SPLIT_SEED_START))})
    s.set_defaults(func=cmd_eqa_eval)


def cmd_eqa_eval(args) -> int:
    from vlagym.agents.eqa import EQAEvalConfig, evaluate_eqa

    report = evaluate_eqa(EQAEvalConfig(**args.config_values))
    for r in report["rows"]:
        lo, hi = r["answer_ci95"]
        who = "blind answerer" if r["blind"] else "answerer"
        print(f"{r['navigator']:>10} + {who}: answer {_pct(r['answer_accuracy'])} ({_pct(lo)}-{_pct(hi)}), "
              f"navigation {_pct(r['navigation_success'])}, SPL {r['spl']:.2f}, "
              f"final distance {r['final_distance_mean']:.2f} m, {r['episodes']} episodes")
    print(f"report: {args.out}/report.json")
    return 0


COMMANDS = [
    Command("eqa-data", "expert episodes' last frames for the EQA answerer",
            "Play the NavEQA expert over a seed split and keep each episode's last frames, question and "
            "answer (eqa.npz), for training and validating the answerer.", _eqa_data_args),
    Command("eqa-train", "train the embodied-question-answering answerer",
            "Train the answerer (a small CNN over the last frames, attention from the question's word "
            "embedding, an answer classifier) on eqa-data; --blind trains the question-only baseline. "
            "Reports accuracy on --eval-data.", _eqa_train_args),
    Command("eqa-eval", "embodied question answering: navigators plus the answerer",
            "Play vlagym/NavEQA-v0 on held-out seeds with each navigator (expert, forward-only, random, or a "
            "saved policy) and answer from its last frames; report answer accuracy and navigation success, "
            "SPL and final distance (report.json).", _eqa_eval_args),
]
