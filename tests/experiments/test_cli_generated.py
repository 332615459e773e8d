"""The command line generated from the config dataclasses: every field a flag with its docstring as help,
and one precedence rule for YAML, flags and key=value in every command (defaults < YAML < flags < key=value)."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest
import yaml

from vlagym.core.config import apply_overrides, coerce
from vlagym.experiments.cli import build_parser, commands, main
from vlagym.experiments.commands.args import field_docs, help_text, resolve

TOUCH, NAV = "vlagym/TabletopTouch-v0", "vlagym/NavObjectGoal-v0"
NAMES = [c.name for c in commands()]


def parsed(argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed and resolved as ``main`` does, without running the command."""
    args = build_parser(only=argv[0]).parse_args(argv)
    return resolve(args)


def subparsers(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command parser by its name, nested ones as ``"bench env"``."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, p in action.choices.items():
                out[prefix + name] = p
                out.update(subparsers(p, f"{prefix}{name} "))
    return out


def config_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command parser that add_config built, by command name."""
    return {name: p for name, p in subparsers(build_parser()).items() if p.get_default("_config") is not None}


@pytest.mark.parametrize("name", NAMES)
def test_every_command_help_exits_zero(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert f"usage: vlagym {name}" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["regress", a, "--help"] for a in ("record-golden", "check-golden", "compare",
                                                                      "check")]
                         + [["bench", w, "--help"] for w in ("env", "data", "policy", "train")])
def test_nested_command_help_exits_zero(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0


def test_top_level_help_lists_every_command():
    res = subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    for name in NAMES:
        assert name in res.stdout


GENERATED = {
    "collect": "CollectConfig", "record": "RecordConfig", "expert-eval": "ExpertEvalConfig",
    "train": "TrainConfig", "pipeline": "PipelineConfig", "dagger": "DaggerConfig", "eval": "EvalConfig",
    "rl": "RLConfig", "vl-data": "VLDataConfig", "vl-train": "VLTrainConfig", "vl-ground": "GroundingConfig",
    "ground": "GroundConfig", "bench env": "BenchEnvConfig", "bench data": "BenchDataConfig",
    "bench policy": "BenchPolicyConfig", "bench train": "BenchTrainConfig",
    "regress record-golden": "RecordGoldenConfig", "regress check-golden": "CheckGoldenConfig",
    "regress compare": "CompareConfig", "regress check": "RegressCheckConfig",
    "data-efficiency": "EfficiencyConfig", "suite-compare": "SuiteCompareConfig", "dagger-plot": "PlotConfig",
    "rl-plot": "PlotConfig", "compress": "CompressConfig", "speed-success": "SpeedSuccessConfig",
    "dataset": "DatasetConfig", "report": "ReportConfig", "eqa-data": "EQADataConfig", "eqa-train": "EQATrainConfig",
    "eqa-eval": "EQAEvalConfig", "vqa-data": "VQADataConfig", "vqa-train": "VQAConfig", "nsvqa-train": "NSVQAConfig",
    "vqa-eval": "VQAEvalConfig", "vqa-plot": "VQAPlotConfig",
    "vqa-export": "VQAExportConfig", "vqa-fewshot": "FewShotConfig", "caption-train": "CaptionTrainConfig",
    "caption": "CaptionConfig", "parse-train": "ParseTrainConfig", "parse": "ParseConfig"}
"""Which command is generated from which dataclass."""
NOT_GENERATED = {"bench", "regress", "envs"}
"""bench and regress only choose a subcommand; envs takes nothing."""


def test_commands_with_a_config_dataclass():
    generated = {name: p.get_default("_config").cls.__name__ for name, p in config_parsers().items()}
    assert generated == GENERATED
    assert set(subparsers(build_parser())) - set(GENERATED) == NOT_GENERATED


@pytest.mark.parametrize("name", sorted(config_parsers()))
def test_every_field_is_a_flag_with_its_docstring_as_help(name):
    parser = config_parsers()[name]
    spec = parser.get_default("_config")
    docs = field_docs(spec.cls)
    by_dest = {a.dest: a for a in parser._actions}
    text = " ".join(parser.format_help().split())
    for f in dataclasses.fields(spec.cls):
        assert docs.get(f.name), f"{spec.cls.__name__}.{f.name} has no docstring"
        action = by_dest.get(f.name)
        assert action is not None, f"{name}: no argument for {f.name}"
        assert help_text(docs[f.name]).replace("%", "%%") in action.help  # argparse unescapes %%
        if spec.flags.get(f.name) is not None and spec.flags[f.name].positional:
            assert not action.option_strings and f.name.upper() in text  # a positional path list
            continue
        flag = "--" + f.name.replace("_", "-")
        assert flag in action.option_strings, f"{name}: no flag for {f.name}"
        assert flag in text


def test_old_flag_spellings_stay_as_aliases():
    args = parsed(["rl", "--env", TOUCH, "--timesteps", "10", "--lr", "1e-3", "--kwargs", "obs_mode=state",
                   "--instruction", "tokens", "--vl-freeze", "--no-vl-freeze"])
    assert args.learning_rate == 1e-3 and args.env_kwargs == {"obs_mode": "state"}
    assert args.instruction == {"kind": "tokens"} and args.vl_freeze is False
    args = parsed(["eval", "--policy", "p", "--no-expert", "--kwargs", "level=L1", "--suite", "robustness"])
    assert args.expert is False and args.env_kwargs == {"level": "L1"} and args.suite == "robustness"
    args = parsed(["pipeline", "--quick", "--env", TOUCH, "--demos", "3"])
    assert args.config_explicit == {"train_env": TOUCH, "demos": 3}  # the rest is quick's


def test_train_precedence_defaults_yaml_flags_key_value(tmp_path):
    from vlagym.policies.train import TrainConfig

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": ["a"], "steps": 10, "lr": 0.01, "batch_size": 8,
                                    "policy_overrides": {"horizon": 2, "history": 3}}))
    args = parsed(["train", "--config", str(path), "--steps", "20", "--batch-size", "16", "steps=30",
                   "policy.horizon=4", "--set", "lr=1e-3"])
    cfg = TrainConfig(**args.config_values)
    assert cfg.steps == 30  # key=value over the flag over the YAML
    assert cfg.batch_size == 16  # the flag over the YAML
    assert cfg.lr == 1e-3 and cfg.data == ["a"]
    assert cfg.policy_overrides == {"horizon": 4, "history": 3}  # policy.<field> sets one entry
    assert cfg.warmup_steps == TrainConfig.warmup_steps  # the default where nothing sets it
    assert parsed(["train", "--no-augment"]).augment is False


def test_rl_precedence_and_every_sac_setting(tmp_path):
    from vlagym.experiments.rl import RLConfig

    path = tmp_path / "sac.yaml"
    path.write_text(yaml.safe_dump({"env": NAV, "algo": "sac", "timesteps": 1000, "buffer_size": 5000,
                                    "learning_starts": 50, "env_kwargs": {"action_mode": "continuous"}}))
    args = parsed(["rl", "--config", str(path), "--buffer-size", "7000", "learning_starts=20",
                   "--kwargs", "obs_mode=state"])
    cfg = RLConfig(**{**args.config_values, "env": args.env})
    assert (cfg.algo, cfg.timesteps, cfg.buffer_size, cfg.learning_starts) == ("sac", 1000, 7000, 20)
    # The flag's pairs merge over the YAML's (and RLConfig adds its dense reward).
    assert cfg.env_kwargs == {"action_mode": "continuous", "obs_mode": "state", "reward_type": "dense"}
    flags = parsed(["rl", "--algo", "sac", "--env", NAV, "--timesteps", "10", "--buffer-size", "123"])
    assert RLConfig(**flags.config_values).buffer_size == 123
    assert parsed(["rl", "--env", NAV, "--timesteps", "10", "buffer_size=1e4"]).buffer_size == 10_000


def test_collect_precedence_and_required_fields(tmp_path, capsys):
    path = tmp_path / "collect.yaml"
    path.write_text(yaml.safe_dump({"env": TOUCH, "episodes": 5, "out": "x", "noise": 0.2, "shard_size": 7}))
    args = parsed(["collect", "--config", str(path), "--noise", "0.3", "shard_size=9"])
    assert (args.env, args.episodes, args.noise, args.shard_size) == (TOUCH, 5, 0.3, 9)
    assert args.image_size == 128 and args.compression == "gzip"
    with pytest.raises(SystemExit) as e:
        parsed(["collect", "--env", TOUCH, "--episodes", "3"])
    assert e.value.code == 2
    assert "the following arguments are required: --out (or out= as key=value or in --config)" in \
        capsys.readouterr().err


def test_bad_key_value_names_the_key_and_the_valid_ones(tmp_path, capsys):
    code = main(["rl", "--env", TOUCH, "--timesteps", "10", "bufer_size=3"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vlagym rl: error: unknown config keys ['bufer_size']")
    assert "valid keys: env, algo, timesteps" in err and "buffer_size" in err
    assert main(["rl", "--env", TOUCH, "--timesteps", "10", "buffer_size=lots"]) == 2
    assert "buffer_size=lots: expected an integer" in capsys.readouterr().err
    assert main(["rl", "--env", TOUCH, "--timesteps", "10", "buffer_size"]) == 2
    assert "override 'buffer_size' is not key=value" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("stepz: 3\n")
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"unknown config keys ['stepz'] in {bad}; valid keys: data, policy" in err


def test_checks_of_a_flag_hold_for_key_value_and_yaml(tmp_path, capsys):
    assert main(["eval", "--policy", "p", "--env", TOUCH, "--set", "episodes=0"]) == 2
    assert "episodes=0: must be >= 1, got 0" in capsys.readouterr().err
    assert main(["eval", "--policy", "p", "--env", TOUCH, "--set", "suite=everything"]) == 2
    assert "suite=everything: choose one of generalization, robustness" in capsys.readouterr().err
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"env": TOUCH, "episodes": 1, "out": "x", "workers": 0}))
    assert main(["collect", "--config", str(path)]) == 2
    assert "workers=0: must be >= 1, got 0" in capsys.readouterr().err


def test_choices_of_a_list_flag_are_checked_item_by_item(tmp_path, capsys):
    args = build_parser(only="vl-data").parse_args(["vl-data", "--env", TOUCH, "--images", "1", "--out", "x",
                                                    "--cameras", "rgb"])
    resolve(args)
    assert tuple(args.config_values["cameras"]) == ("rgb",)
    argv = ["vl-data", "--env", TOUCH, "--images", "1", "--out", str(tmp_path), "--set", "cameras=[rgb, top]"]
    assert main(argv) == 2
    assert "cameras=top: choose one of rgb, rgb_wrist" in capsys.readouterr().err


def test_values_are_read_by_the_field_type():
    from vlagym.policies.train import TrainConfig

    hints = {"out": str, "steps": int, "lr": float, "amp": bool, "max_demos": int | None}
    assert coerce("out", "123", hints["out"]) == "123"
    assert coerce("steps", "1e3", hints["steps"]) == 1000 and coerce("lr", "1e-3", hints["lr"]) == 1e-3
    assert coerce("amp", "false", hints["amp"]) is False
    assert coerce("max_demos", "null", hints["max_demos"]) is None
    for name, text, message in [("steps", "2.5", "expected an integer"), ("amp", "maybe", "expected true or false"),
                                ("lr", "fast", "expected a number")]:
        with pytest.raises(ValueError, match=f"{name}={text}: {message}"):
            coerce(name, text, hints[name])
    values = apply_overrides({}, ["data=[a, b]", "policy_overrides.horizon=4"], TrainConfig)
    assert values == {"data": ["a", "b"], "policy_overrides": {"horizon": 4}}
    with pytest.raises(ValueError, match="steps is not a mapping"):
        apply_overrides({}, ["steps.x=1"], TrainConfig)


def test_vl_train_dotted_keys_start_from_the_default_model(tmp_path):
    from vlagym.vl.model import DEFAULT_MODEL_CFG

    args = parsed(["vl-train", "--data", "d", "steps=5", "model_cfg.vision_cfg.width=96", "--no-hard-negatives"])
    assert args.steps == 5 and args.hard_negatives is False
    assert args.model_cfg["vision_cfg"]["width"] == 96
    assert args.model_cfg["text_cfg"] == DEFAULT_MODEL_CFG["text_cfg"]  # the rest of the default kept


def test_bench_precedence_yaml_flags_set(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump({"env": [TOUCH], "sizes": [32, 48], "steps": 50}))
    args = parsed(["bench", "env", "--config", str(path), "--steps", "20", "--set", "sizes=[64]"])
    assert (args.env, args.sizes, args.steps, args.json) == ([TOUCH], [64], 20, None)
    args = parsed(["bench", "data", "--data", "d", "--workers", "0", "--set", "seconds=0.5"])
    assert (args.data, args.workers, args.batch_size, args.seconds) == ("d", 0, 32, 0.5)
    args = parsed(["bench", "policy", "--policy-dir", "p", "--backends", "torch,onnx", "onnx-int8", "--calls", "3"])
    assert (args.policy_dir, args.backends, args.calls, args.threads) == ("p", ["torch,onnx", "onnx-int8"], 3, 1)


def test_training_config_of_bench_train_and_data_efficiency_keeps_its_meaning(tmp_path):
    # --config and the positional key=value are the training config's; the command's own file is --settings.
    settings = tmp_path / "eff.yaml"
    settings.write_text(yaml.safe_dump({"config": "train.yaml", "demos": [5, 10], "out": "o", "episodes": 7}))
    args = parsed(["data-efficiency", "--settings", str(settings), "steps=30", "lr=1e-3", "--episodes", "9",
                   "--set", "demos=[3]"])
    assert (args.config, args.overrides, args.demos, args.episodes, args.out) == (
        "train.yaml", ["steps=30", "lr=1e-3"], [3], 9, "o")
    args = parsed(["data-efficiency", "--config", "c.yaml", "--demos", "2", "4", "--out", "x", "steps=5"])
    assert (args.config, args.overrides, args.demos) == ("c.yaml", ["steps=5"], [2, 4])
    args = parsed(["bench", "train", "--config", "c.yaml", "threads=1", "--steps", "12", "--set", "bare_threads=2"])
    assert (args.config, args.overrides, args.steps, args.bare_threads) == ("c.yaml", ["threads=1"], 12, 2)


def test_positional_paths_from_the_command_line_or_yaml(tmp_path, capsys):
    args = parsed(["rl-plot", "a", "b", "--labels", "x", "y", "--out", "p.png", "--set", "title=curves"])
    assert (args.runs, args.labels, args.title, args.out) == (["a", "b"], ["x", "y"], "curves", "p.png")
    path = tmp_path / "plot.yaml"
    path.write_text(yaml.safe_dump({"runs": ["r1", "r2"], "out": "q.png"}))
    assert parsed(["dagger-plot", "--config", str(path)]).runs == ["r1", "r2"]
    assert parsed(["dagger-plot", "r3", "--config", str(path)]).runs == ["r3"]  # the command line wins
    assert parsed(["suite-compare", "s1", "s2", "--out", "cmp"]).reports == ["s1", "s2"]
    assert parsed(["regress", "check-golden", "g1.json", "g2.json"]).files == ["g1.json", "g2.json"]
    with pytest.raises(SystemExit) as e:
        parsed(["rl-plot", "--out", "p.png"])
    assert e.value.code == 2
    assert "required: RUNS (or runs= as key=value or in --config)" in capsys.readouterr().err


def test_regress_settings_keep_their_flags(tmp_path):
    args = parsed(["regress", "record-golden", "--env", TOUCH, "--seeds", "0", "--steps", "3", "--kwargs",
                   "level=L1", "--out", "g.json"])
    assert (args.env, args.seeds, args.steps, args.image_size, args.env_kwargs) == (TOUCH, [0], 3, 32, {"level": "L1"})
    args = parsed(["regress", "compare", "--baseline", "a", "--candidate", "b", "--allow-version-mismatch",
                   "--set", "alpha=0.1"])
    assert (args.alpha, args.agent, args.allow_version_mismatch) == (0.1, "policy", True)
    path = tmp_path / "check.yaml"
    path.write_text(yaml.safe_dump({"policy": "p", "env": TOUCH, "min_success": 0.5, "episodes": 16}))
    args = parsed(["regress", "check", "--config", str(path), "--min-success", "0.25"])
    assert (args.policy, args.min_success, args.episodes, args.workers) == ("p", 0.25, 16, None)
