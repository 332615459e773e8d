"""Reinforcement-learning commands: rl, rl-plot."""

from __future__ import annotations

from vlagym.experiments.commands.args import (
    COUNT,
    Command,
    Flag,
    add_config,
    env_ids,
    honour_trust_pickle,
    labelled_runs,
    plot_args,
    trust_pickle_flag,
)


def _instruction(kind: str) -> dict:
    return {"kind": kind}


def _rl_args(s) -> None:
    from vlagym.experiments.rl import ALGOS, RLConfig
    from vlagym.policies.rl import IMAGE_BACKBONES

    add_config(s, RLConfig, flags={
        "env": Flag(required=True), "timesteps": Flag(required=True),
        "algo": Flag(choices=ALGOS), "vec": Flag(choices=("subproc", "dummy")),
        "image_backbone": Flag(choices=IMAGE_BACKBONES),
        # The flag names the kind; YAML and key=value take the whole InstructionEncoder mapping.
        "instruction": Flag(choices=("sentence", "tokens"), convert=_instruction),
        "learning_rate": Flag(aliases=("--lr",)), "env_kwargs": Flag(aliases=("--kwargs",)),
        "vl_model": Flag(metavar="DIR"), "eval_episodes": Flag(type=COUNT), "workers": Flag(type=COUNT)})
    trust_pickle_flag(s, "a resume to unpickle a checkpoint zip that cannot be loaded safely")
    s.set_defaults(func=cmd_rl)


def cmd_rl(args) -> int:
    from vlagym.experiments.rl import RLConfig, train_rl

    honour_trust_pickle(args)
    cfg = RLConfig(**{**args.config_values, "env": env_ids([args.env])[0]})
    summary = train_rl(cfg)
    for row in summary["curve"]:
        print(f"step {int(row['timesteps']):>8d}  {float(row['wall_s']):7.0f}s  validation success "
              f"{row['successes']}/{row['episodes']} [{float(row['ci_low']):.2f}, {float(row['ci_high']):.2f}]")
    if "test" in summary:
        t = summary["test"]
        print(f"test seeds: success {t['successes']}/{t['episodes']} = {t['success_rate']:.0%} "
              f"(95% CI {t['success_ci95'][0]:.2f}-{t['success_ci95'][1]:.2f}); report {summary['report']}")
    print(f"model: {summary['model']}; curve: {summary.get('curve_png')}; TensorBoard: {summary['run']}/tb")
    return 0


def cmd_rl_plot(args) -> int:
    from vlagym.experiments.rl import plot_curves

    print(plot_curves(dict(labelled_runs(args.runs, args.labels)), args.out, args.title))
    return 0


COMMANDS = [
    Command("rl", "reinforcement learning with stable-baselines3 (PPO, SAC)",
            "Train PPO or SAC on a vlagym env through the SB3 wrapper (instruction as a sentence embedding or "
            "token ids, channel-first images, a FiLM features extractor, or with --vl-model a vl-train model's "
            "towers), on the dense shaped reward, with vectorised envs, checkpoints, TensorBoard and a learning "
            "curve of deterministic success on validation seeds; then evaluate on test seeds through the "
            "evaluator (report.json). Rerun the same command to resume. `vlagym eval --policy OUT` loads the "
            "model. Every RLConfig field is a flag (SAC: --buffer-size, --learning-starts).", _rl_args),
    Command("rl-plot", "learning curves of several rl runs on one plot",
            "Overlay the validation-success curves (curve.csv, with 95% Wilson bands) of several `vlagym rl` "
            "runs, e.g. fine-tuning with and without --critic-warmup.",
            plot_args(cmd_rl_plot)),
]
