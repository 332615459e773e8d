"""The ``vlagym`` command line: one console script, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from vlagym.core.splits import TEST_SEED_START
from vlagym.experiments.pipeline import PipelineConfig


def _env_ids(values: list[str] | None) -> list[str]:
    from vlagym.envs import ENV_IDS, check_env_id

    if not values or values == ["all"]:
        return list(ENV_IDS)
    return [check_env_id(v) for v in values]


def _at_least(low: int):
    """An argparse type: an int >= ``low`` (``--episodes 0`` once wrote an empty report and exited 0,
    ``--workers 0`` ran anyway)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int >= {low}"  # what argparse calls it in "invalid ... value"
    return parse


COUNT = _at_least(1)


def _kwargs(items: list[str] | None) -> dict:
    """``key=value`` pairs (values parsed as YAML) for gym.make."""
    import yaml

    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--kwargs takes key=value pairs, got {item!r}")
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


# --- subcommands ----------------------------------------------------------------------------------------------
def cmd_pipeline(args) -> int:
    from vlagym.experiments.pipeline import run_pipeline

    base = PipelineConfig.quick if args.quick else PipelineConfig
    overrides = {k: v for k, v in {"out": args.out, "demos": args.demos, "train_steps": args.train_steps,
                                   "eval_episodes": args.eval_episodes, "policy": args.policy,
                                   "workers": args.workers, "noise": args.noise}.items() if v is not None}
    if args.env:
        overrides["train_env"] = _env_ids([args.env])[0]
    report = run_pipeline(base(**overrides))
    print(Path(report["paths"]["report_md"]).read_text())
    print(f"report: {report['paths']['report_json']} and {report['paths']['report_md']}")
    print(f"videos: {report['paths']['videos']}/")
    return 0


def cmd_expert_eval(args) -> int:
    from vlagym.agents.rollout import Job, run_jobs
    from vlagym.envs import check_env_kwargs
    from vlagym.experiments.report import build_report, to_markdown, write_report

    env_ids = _env_ids(args.env)
    extra = _kwargs(args.kwargs)
    kwargs = tuple(sorted({**({} if args.render else {"obs_mode": "state"}), **extra}.items()))
    for e in env_ids:
        check_env_kwargs(e, dict(kwargs))
    if args.out:
        from vlagym.experiments.evaluate import check_writable

        check_writable(args.out)
    seeds = {e: list(range(args.seed_start, args.seed_start + args.episodes)) for e in env_ids}
    takeover = getattr(args, "takeover_after", None)
    driver = "expert"
    if takeover is not None:
        driver = args.driver
        if driver != "random":
            from vlagym.agents.policy_agent import policy_env_kwargs

            kwargs = tuple(sorted({**policy_env_kwargs(driver), **extra}.items()))
    jobs = [Job(e, s, noise=args.noise, env_kwargs=kwargs, agent=driver, takeover=takeover)
            for e in env_ids for s in seeds[e]]
    episodes = run_jobs(jobs, workers=args.workers, desc="expert-eval" if takeover is None else "hand-over")
    if takeover is not None:
        from vlagym.agents.stats import handover_summary

        summary = handover_summary(episodes)
        episodes = [ep for ep in episodes if (ep.info.get("handover") or {}).get("unsolvable", "") is None]
        seeds = {e: [ep.seed for ep in episodes if ep.env_id == e] for e in env_ids}
    report = build_report({"expert": episodes}, seeds, job="expert-eval", noise=args.noise, env_kwargs=extra)
    if takeover is not None:
        report["handover"] = {"after_steps": takeover, "driver": driver, "per_task": summary}
    print(to_markdown(report))
    if takeover is not None:
        print(f"hand-over after {takeover} steps of {driver}; success above counts solvable hand-overs only")
        for env_id, row in summary.items():
            print(f"  {env_id}: {row['solvable']} solvable, {row['unsolvable']} unsolvable "
                  f"{row['reasons'] or ''}, {row['ended_before']} ended before the hand-over")
    if args.out:
        json_path, _ = write_report(report, args.out)
        print(f"report: {json_path}")
    rate = report["agents"]["expert"]["overall"]["success_rate"]
    return 0 if rate >= args.min_success else 1


def cmd_record(args) -> int:
    import gymnasium as gym

    from vlagym.agents.rollout import run_episode, video_kwargs
    from vlagym.agents.video import write_video

    if args.trust_pickle:
        from vlagym.agents.safe_load import allow_pickle

        allow_pickle()
    env_id = _env_ids([args.env])[0]
    kwargs = {"image_size": args.image_size, **video_kwargs(env_id)}
    if args.policy:
        from vlagym.agents.policy_agent import PolicyAgent, policy_env_kwargs

        agent = PolicyAgent.load(args.policy)
        kwargs.update(policy_env_kwargs(args.policy))  # the env the policy was trained on
        make_agent = lambda e: agent  # noqa: E731
    else:
        make_agent = lambda e: e.unwrapped.task.expert(noise=args.noise)  # noqa: E731
    env = gym.make(env_id, **kwargs)
    if args.heatmaps and not args.policy:
        raise ValueError("--heatmaps draws a trained policy's grounding heads; pass --policy")
    ep = run_episode(env, args.seed, make_agent, record=True, heatmaps=args.heatmaps)
    path = write_video(args.out, ep.frames)
    who = args.policy or "expert"
    print(f"{who} on {ep.instruction!r}: {'success' if ep.success else 'failure'} in {ep.steps} steps -> {path}")
    return 0


def cmd_bench(args) -> int:
    from vlagym.experiments.bench import bench_env, format_env_rows

    if args.what == "env":
        rows = bench_env(_env_ids(args.env), sizes=args.sizes, steps=args.steps)
        print(format_env_rows(rows))
    elif args.what == "train":
        from vlagym.experiments.bench import bench_train, format_train_row

        rows = bench_train(args.config, args.overrides, steps=args.steps)
        print(format_train_row(rows))
    elif args.what == "policy":
        from vlagym.experiments.bench import bench_policy, format_policy_rows

        env_id = _env_ids(args.env)[0] if args.env else "vlagym/TabletopTouch-v0"
        rows = bench_policy(env_id=env_id, image_size=max(args.sizes), batch_size=args.batch_size)
        print(format_policy_rows(rows))
    else:
        from vlagym.experiments.bench import bench_data

        if not args.data:
            raise ValueError("bench data needs --data DIR (a dataset from `vlagym collect`)")
        rows = bench_data(args.data, workers=args.workers, batch_size=args.batch_size, seconds=args.seconds)
        for r in rows:
            print(f"history={r['history']:2d} horizon={r['horizon']:2d} augment={str(r['augment']):5s}: "
                  f"{r['samples_per_s']:.0f} samples/s ({r['workers']} workers, batch {r['batch_size']}); "
                  f"{r['bytes_per_frame'] / 1024:.1f} KiB per frame on disk")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def field_docs(cls) -> dict[str, str]:
    """A dataclass's field docstrings (the string literal under each field), by field name."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def add_dataclass_args(parser: argparse.ArgumentParser, cls, required: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per field of dataclass ``cls``, typed by its default, its docstring as help."""
    import dataclasses

    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_text = docs.get(f.name, "").replace("%", "%%")
        if f.name in required or f.default is dataclasses.MISSING:
            parser.add_argument(flag, dest=f.name, required=True, help=help_text)
            continue
        kind = type(f.default) if f.default is not None else str
        parser.add_argument(flag, dest=f.name, type=kind, default=f.default, help=help_text)


def _add_plot_command(sub, fmt, name: str, help_text: str, description: str, runs_help: str, func) -> None:
    """A command that overlays several runs on one PNG: RUN... --labels ... --title ... --out FILE."""
    s = sub.add_parser(name, formatter_class=fmt, help=help_text, description=description)
    s.add_argument("runs", nargs="+", help=runs_help)
    s.add_argument("--labels", nargs="+", default=None, help="legend names (default: the folder names)")
    s.add_argument("--title", default="", help="plot title")
    s.add_argument("--out", required=True, help="PNG file")
    s.set_defaults(func=func)


def cmd_dagger(args) -> int:
    import dataclasses

    from vlagym.experiments.dagger import DaggerConfig, dagger

    cfg = DaggerConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DaggerConfig)})
    if cfg.env is not None:
        cfg.env = _env_ids([cfg.env])[0]
    report = dagger(cfg)
    print((Path(cfg.out) / "report.md").read_text())
    print(f"report: {Path(cfg.out) / 'report.json'}; plot: {Path(cfg.out) / 'dagger.png'}; "
          f"final policy: {report['final_policy']}")
    return 0


def cmd_dagger_plot(args) -> int:
    from vlagym.core.io import read_json
    from vlagym.experiments.dagger import plot_dagger_runs

    labels = args.labels or [Path(r).name for r in args.runs]
    if len(labels) != len(args.runs):
        raise ValueError(f"--labels gives {len(labels)} names for {len(args.runs)} runs")
    reports = {}
    for label, run in zip(labels, args.runs, strict=True):
        path = Path(run) / "report.json"
        if not path.exists():
            raise FileNotFoundError(f"{run} holds no DAgger report.json (a run writes it when its last round ends)")
        reports[label] = read_json(path)
    print(plot_dagger_runs(reports, args.out, args.title))
    return 0


def cmd_collect(args) -> int:
    from vlagym.agents.collect import CollectConfig, collect

    kwargs = {"image_size": args.image_size, **_kwargs(args.kwargs)}
    if args.wrist_camera:
        kwargs["wrist_camera"] = True
    cfg = CollectConfig(env=_env_ids([args.env])[0], episodes=args.episodes, out=args.out, workers=args.workers,
                        split=args.split, seed_start=args.seed_start, noise=args.noise, env_kwargs=kwargs,
                        shard_size=args.shard_size, level=args.level)
    m = collect(cfg)
    print(f"{m['episodes']} episodes ({m['frames']} frames, {m['dropped_failures']} failures dropped) "
          f"in {args.out}; seeds {m['seed_range'][0]}..{m['seed_range'][1]} ({m['split']})")
    return 0


def cmd_dataset(args) -> int:
    from vlagym.dataio.dataset import DatasetError, load_demo
    from vlagym.dataio.format import open_dataset

    if args.action == "verify":
        return _verify_dataset(args.path)
    dataset = open_dataset(args.path)
    refs = dataset.episodes()
    if args.action == "info":
        import numpy as np

        from vlagym.dataio.dataset import compute_stats

        manifest = dataset.metadata()
        words = sorted({w for r in refs for w in r.instruction.replace(",", " ").split()})
        size = sum(p.stat().st_size for p in dataset.files())
        frames = sum(r.length for r in refs)
        stats = compute_stats(refs)["actions"]
        print(f"dataset      {args.path}")
        print(f"env          {manifest['env_args']['env_name']}  split={manifest['split']}  "
              f"noise={manifest['noise']}")
        print(f"episodes     {len(refs)}  (dropped failures: {manifest['dropped_failures']})")
        print(f"frames       {frames}  (mean length {frames / len(refs):.1f})")
        succeeded = sum(r.success for r in refs)
        print(f"success      {succeeded / len(refs):.0%} ({succeeded} of {len(refs)} episodes' 'success' attribute)")
        print(f"instructions {len({r.instruction for r in refs})} distinct; vocabulary {len(words)} words:")
        print("             " + " ".join(words))
        print("actions      mean " + np.array2string(np.array(stats["mean"]), precision=3))
        print("             std  " + np.array2string(np.array(stats["std"]), precision=3))
        print("             min  " + np.array2string(np.array(stats["min"]), precision=3))
        print("             max  " + np.array2string(np.array(stats["max"]), precision=3))
        print(f"size on disk {size / 2**20:.1f} MiB ({size / max(frames, 1) / 1024:.1f} KiB per frame)")
        return 0
    from vlagym.agents.video import annotate, write_video

    if not 0 <= args.episode < len(refs):
        raise ValueError(f"episode {args.episode} out of range: the dataset has {len(refs)} episodes")
    demo = load_demo(refs[args.episode])
    if args.key not in demo["obs"]:
        raise DatasetError(f"{refs[args.episode].path} [{refs[args.episode].key}]: no obs/{args.key}; "
                           f"have {sorted(demo['obs'])}")
    frames = [annotate(f, refs[args.episode].instruction, t) for t, f in enumerate(demo["obs"][args.key])]
    path = write_video(args.out, frames)
    print(f"episode {args.episode} (seed {refs[args.episode].seed}, {len(frames)} frames) -> {path}")
    return 0


def _verify_dataset(path: str) -> int:
    """Decode every chunk, compare checksums; one line per shard, every problem, a summary; 1 on problems."""
    from vlagym.dataio.dataset import verify

    checks = verify(path)
    for c in checks:
        sums = "checksums match" if not c.without_checksums else (
            f"decoded; {c.without_checksums} demos have no checksums (written before format 2)")
        print(f"{c.path.name}  {c.demos} demos  " + ("ok, " + sums if c.ok else f"BAD: {len(c.problems)} problems"))
        for problem in c.problems:
            print(f"  {problem}")
    problems = sum(len(c.problems) for c in checks)
    demos = sum(c.demos for c in checks)
    unchecked = sum(c.without_checksums for c in checks)
    print(f"verified {demos} demos in {len(checks)} shards: " + (f"{problems} problems in "
          f"{sum(not c.ok for c in checks)} shards" if problems else "no problems")
          + (f"; {unchecked} demos without checksums were only decoded" if unchecked else ""))
    return 1 if problems else 0


def cmd_train(args) -> int:
    from vlagym.policies.train import load_config, train

    if args.trust_pickle:
        from vlagym.agents.safe_load import allow_pickle

        allow_pickle()
    cfg = load_config(args.config, args.overrides)
    summary = train(cfg, resume=args.resume)
    if summary["best"]["step"] is None:
        print(f"no validation ran; final policy: {summary['best_policy']}; run folder {summary['run']}")
    else:
        print(f"best policy: {summary['best_policy']} (validation success {summary['best']['success_rate']:.0%} "
              f"at step {summary['best']['step']}); run folder {summary['run']}")
    return 0


def _eval_env_ids(args) -> list[str]:
    """``--env``, or the env the policy was trained on."""
    if args.env:
        return _env_ids(args.env)
    if not args.policy:
        raise ValueError("--env is needed when there is no --policy to read it from")
    from vlagym.agents.policy_agent import policy_env_args

    env_id, _, _ = policy_env_args(args.policy)
    if env_id is None:
        raise ValueError(f"{args.policy} records no env (no env_args.json beside it); pass --env")
    return [env_id]


def cmd_eval(args) -> int:
    if args.trust_pickle:
        from vlagym.agents.safe_load import allow_pickle

        allow_pickle()
    args.env = _eval_env_ids(args)
    if args.suite:
        from vlagym.experiments.suites import run_suite, to_markdown

        report = run_suite(args.suite, args.policy, _env_ids(args.env), args.episodes, seed_start=args.seed_start,
                           workers=args.workers, expert=not args.no_expert, out=args.out, levels=args.levels,
                           perturbations=args.perturbations, strengths=args.strengths,
                           env_kwargs=_kwargs(args.kwargs))
        print(to_markdown(report))
        if "paths" in report:
            print(f"report: {report['paths']['report_json']}; plot: {report['paths']['plot']}")
        return 0
    if not args.policy:
        raise ValueError("eval needs --policy (only --suite runs the expert alone)")
    from vlagym.experiments.evaluate import evaluate

    report = evaluate(args.policy, _env_ids(args.env), args.episodes, seed_start=args.seed_start,
                      workers=args.workers, video_dir=args.video, videos_per_env=args.videos,
                      expert=not args.no_expert, out=args.out, gif=args.gif, env_kwargs=_kwargs(args.kwargs),
                      split=args.split)
    from vlagym.experiments.report import to_markdown

    print(to_markdown(report))
    if "paths" in report:
        print(f"report: {report['paths']['report_json']}")
    if args.video:
        print(f"videos: {args.video}/")
    return 0


def cmd_data_efficiency(args) -> int:
    from vlagym.experiments.efficiency import run_efficiency, to_markdown

    summary = run_efficiency(args.config, args.overrides, args.demos, args.episodes, args.out,
                             seed_start=args.seed_start, workers=args.workers)
    print(to_markdown(summary))
    print(f"plot: {Path(args.out) / 'efficiency.png'}; table: {Path(args.out) / 'efficiency.md'}")
    return 0


def cmd_rl(args) -> int:
    from vlagym.experiments.rl import RLConfig, train_rl

    if args.trust_pickle:
        from vlagym.agents.safe_load import allow_pickle

        allow_pickle()
    cfg = RLConfig(env=_env_ids([args.env])[0], algo=args.algo, timesteps=args.timesteps, out=args.out,
                   env_kwargs=_kwargs(args.kwargs), n_envs=args.n_envs,
                   instruction={"kind": args.instruction} if args.instruction else None,
                   vl_model=args.vl_model, vl_freeze=args.vl_freeze,
                   vec=args.vec, seed=args.seed, image_backbone=args.image_backbone, net_arch=args.net_arch,
                   learning_rate=args.lr, n_steps=args.n_steps, batch_size=args.batch_size, n_epochs=args.n_epochs,
                   gamma=args.gamma, ent_coef=args.ent_coef, target_kl=args.target_kl,
                   init_from=args.init_from,
                   init_log_std=args.init_log_std, critic_warmup=args.critic_warmup, max_minutes=args.max_minutes,
                   eval_every=args.eval_every,
                   eval_episodes=args.eval_episodes,
                   checkpoint_every=args.checkpoint_every, test_episodes=args.test_episodes, videos=args.videos,
                   workers=args.workers, device=args.device)
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

    labels = args.labels or [Path(r).name for r in args.runs]
    if len(labels) != len(args.runs):
        raise ValueError(f"--labels gives {len(labels)} names for {len(args.runs)} runs")
    print(plot_curves(dict(zip(labels, args.runs, strict=True)), args.out, args.title))
    return 0


def cmd_suite_compare(args) -> int:
    from vlagym.experiments.suites import compare_suites, comparison_markdown, load_suite_report, write_comparison

    labels = args.labels or [Path(r).name for r in args.reports]
    comparison = compare_suites([load_suite_report(r) for r in args.reports], labels)
    paths = write_comparison(comparison, args.out)
    print(comparison_markdown(comparison))
    print(f"comparison: {paths['md']}, {paths['json']}; plot: {paths['plot']}")
    return 0


def cmd_envs(args) -> int:
    import gymnasium as gym

    for env_id in _env_ids(None):
        spec = gym.spec(env_id)
        print(f"{env_id:32s} max_episode_steps={spec.max_episode_steps} kwargs={spec.kwargs}")
    return 0


def cmd_regress(args) -> int:
    from vlagym import testing

    if args.action == "record-golden":
        env_id = _env_ids([args.env])[0]
        kwargs = {"image_size": args.image_size, **_kwargs(args.kwargs)}
        testing.record_golden(env_id, args.seeds, args.steps, args.out, env_kwargs=kwargs)
        print(f"golden rollout of {env_id} (seeds {args.seeds}, {args.steps} steps) -> {args.out}")
        return 0
    if args.action == "check-golden":
        failed = 0
        for path in args.files:
            try:
                testing.check_golden(path)
                print(f"ok     {path}")
            except testing.EnvContractError as e:
                failed += 1
                print(f"DRIFT  {e}")
        return 1 if failed else 0
    if args.action == "compare":
        reports = [json.loads(Path(p).read_text()) for p in (args.baseline, args.candidate)]
        try:
            result = testing.compare_reports(*reports, alpha=args.alpha, agent=args.agent,
                                             allow_version_mismatch=args.allow_version_mismatch)
        except testing.ReportMismatch as e:
            print(f"vlagym regress compare: refused: {e}", file=sys.stderr)
            return 2
        print(result.table())
        if result.regressed:
            print(f"regressed: {', '.join(result.regressed)}")
            return 1
        print("no task regressed")
        return 0
    from vlagym.core.stats import wilson_interval
    from vlagym.experiments.evaluate import evaluate

    env_id = _env_ids([args.env])[0]
    report = evaluate(args.policy, [env_id], args.episodes, seed_start=args.seed_start, workers=args.workers,
                      expert=False, env_kwargs=_kwargs(args.kwargs))
    s = report["agents"]["policy"]["per_task"][env_id]
    low = wilson_interval(s["successes"], s["episodes"])[0]
    verdict = "ok" if low >= args.min_success else "FAIL"
    print(f"{verdict}: {env_id} success {s['successes']}/{s['episodes']}, 95% Wilson lower bound {low:.3f} "
          f"{'>=' if low >= args.min_success else '<'} --min-success {args.min_success}")
    return 0 if low >= args.min_success else 1


def cmd_vl_data(args) -> int:
    from vlagym.vl.data import VLDataConfig, make_vl_data

    cfg = VLDataConfig(env=_env_ids(args.env), images=args.images, out=args.out, split=args.split,
                       image_size=args.image_size, cameras=tuple(args.cameras), p_in_bowl=args.p_in_bowl,
                       env_kwargs=_kwargs(args.kwargs))
    m = make_vl_data(cfg)
    print(f"{m['images']} images ({m['per_camera']}), {m['captions']} captions in {args.out}; "
          f"seeds {m['seed_range'][0]}..{m['seed_range'][1]} ({m['split']})")
    return 0


def cmd_vl_train(args) -> int:
    from vlagym.vl.train import VLTrainConfig, parse_overrides, train_vl

    if args.trust_pickle:
        from vlagym.agents.safe_load import allow_pickle

        allow_pickle()
    overrides = parse_overrides(args.overrides)
    for key in ("data", "eval_data", "out"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    m = train_vl(VLTrainConfig(**overrides))
    for row in ("zero_shot", "final"):
        if row in m:
            print(f"{row}: " + ", ".join(f"{k}={v}" for k, v in m[row].items()))
    print(f"model: {Path(overrides.get('out', 'runs/vl')) / 'model'}")
    return 0


def cmd_vl_ground(args) -> int:
    from vlagym.vl.grounding import GroundingConfig, train_grounding
    from vlagym.vl.model import resolve_model_dir

    model_dir = resolve_model_dir(args.model)
    out = args.out or str(model_dir.parent / "grounding")
    res = train_grounding(model_dir, args.data, args.eval_data, out,
                          GroundingConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed))
    if "eval" in res:
        print("grounding: " + json.dumps(res["eval"]))
    print(f"head: {out}")
    return 0


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


# --- parser -----------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vlagym",
        description="Language-conditioned robot learning in simulation: environments, experts, policies.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    s = sub.add_parser("pipeline", formatter_class=fmt,
                       help="the main job: demos, training, evaluation, videos, report",
                       description="Run the whole pipeline on its embedded default: collect expert "
                                   "demonstrations, train a policy, evaluate it beside the expert on test seeds, "
                                   "record videos (one expert episode per task too) and write the report. "
                                   "About 11 minutes on 2 CPU cores; --quick takes about 3. Rerun to resume.")
    s.add_argument("--quick", action="store_true", help="a first look in about three minutes")
    s.add_argument("--out", default=None, help="output folder (default runs/main)")
    s.add_argument("--env", default=None, help="training task (default vlagym/TabletopPickUp-v0)")
    s.add_argument("--policy", choices=["bcz", "rt1", "clip"], default=None,
                   help="policy, trained with its recipe in vlagym.experiments.pipeline.RECIPES (default bcz)")
    s.add_argument("--demos", type=int, default=None, help="expert demonstrations (default 1000; quick 20)")
    s.add_argument("--train-steps", type=int, default=None, help="training steps (default 6000; quick 150)")
    s.add_argument("--eval-episodes", type=COUNT, default=None, help="test episodes (default 100; quick 6)")
    s.add_argument("--noise", type=float, default=None,
                   help="expert action noise during collection (default 0.1; BC learns the noiseless labels)")
    s.add_argument("--workers", type=COUNT, default=None, help="worker processes (default: all cores)")
    s.set_defaults(func=cmd_pipeline)

    s = sub.add_parser("expert-eval", formatter_class=fmt, help="measure the scripted experts' success",
                       description="Run each task's scripted expert on consecutive seeds and report success "
                                   "with 95% Wilson intervals. Exits 1 if overall success < --min-success.")
    s.add_argument("--env", nargs="+", default=None, help="env ids, or 'all'")
    s.add_argument("--episodes", type=COUNT, default=200, help="episodes per env")
    s.add_argument("--seed-start", type=int, default=TEST_SEED_START, help="first seed")
    s.add_argument("--workers", type=COUNT, default=None, help="worker processes (default: all cores)")
    s.add_argument("--noise", type=float, default=0.0, help="std of Gaussian action noise (normalised units)")
    s.add_argument("--render", action="store_true", help="render images too (slower; success is the same)")
    s.add_argument("--kwargs", nargs="+", default=None, metavar="KEY=VALUE",
                   help="env keyword arguments, e.g. action_mode=continuous")
    s.add_argument("--min-success", type=float, default=0.0, help="fail (exit 1) below this overall rate")
    s.add_argument("--out", default=None, help="folder for report.json and report.md")
    s.add_argument("--takeover-after", type=COUNT, default=None, metavar="K",
                   help="hand-over check: let --driver act for K steps, then a fresh expert from that state; "
                        "success is counted over the hand-overs whose state is still solvable")
    s.add_argument("--driver", default="random",
                   help="who acts before the hand-over: random (uniform actions) or a policy run folder")
    s.set_defaults(func=cmd_expert_eval)

    s = sub.add_parser("record", formatter_class=fmt, help="record one rollout (policy or expert) to MP4 or GIF",
                       description="Roll out a trained policy (--policy) or the scripted expert on one seed and "
                                   "write an annotated video (the suffix picks the format: .mp4 or .gif).")
    s.add_argument("--env", required=True, help="env id, e.g. vlagym/TabletopPickUp-v0")
    s.add_argument("--policy", default=None, help="policy or training run folder (default: the scripted expert)")
    s.add_argument("--seed", type=int, default=TEST_SEED_START, help="episode seed")
    s.add_argument("--noise", type=float, default=0.0, help="expert action noise")
    s.add_argument("--image-size", type=int, default=128, help="camera resolution (a policy's own wins)")
    s.add_argument("--out", default="rollout.mp4", help="output file (.mp4 or .gif)")
    s.add_argument("--heatmaps", action="store_true",
                   help="draw the policy's predicted heatmaps and pixel positions over each camera (policies "
                        "trained with policy.heatmap_weight > 0)")
    s.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling an SB3 --policy zip that cannot be loaded safely (runs any code a "
                        "crafted file holds)")
    s.set_defaults(func=cmd_record)

    s = sub.add_parser("bench", formatter_class=fmt, help="benchmarks (env, data, policy, train)",
                       description="Speed benchmarks. 'env': env steps/s with rendering on one core at each "
                                   "size, beside raw PyBullet rendering of the same scene without the robot and "
                                   "the same env without privileged labels. 'data': loader samples/s over a "
                                   "dataset with worker processes. 'policy': each policy's default config on one "
                                   "core at the largest --sizes: parameters, checkpoint size, ms per act, ms per "
                                   "batch forward. 'train': samples/s of `vlagym train` with --config and "
                                   "overrides for --steps steps, beside a bare forward/backward loop of the same "
                                   "model on every core.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", default=None, help="dataset folder (data)")
    common.add_argument("--workers", type=_at_least(0), default=2,
                        help="DataLoader workers (data; 0 loads in this process)")
    common.add_argument("--batch-size", type=int, default=32, help="batch size (data, policy)")
    common.add_argument("--seconds", type=float, default=10.0, help="seconds per measurement (data)")
    common.add_argument("--env", nargs="+", default=None, help="env ids (default: all)")
    common.add_argument("--sizes", nargs="+", type=int, default=[64, 96, 128], help="image sizes")
    common.add_argument("--steps", type=int, default=200, help="steps per measurement (env, train)")
    common.add_argument("--json", default=None, help="also write the rows to this JSON file")
    bsub = s.add_subparsers(dest="what", required=True, metavar="WHAT")
    for what, text in (("env", "env steps/s with rendering"), ("data", "loader samples/s"),
                       ("policy", "each policy's size and speed"), ("train", "the training loop's samples/s")):
        b = bsub.add_parser(what, parents=[common], formatter_class=fmt, help=text, description=text)
        if what == "train":
            b.add_argument("--config", default=None, help="training YAML config")
            b.add_argument("overrides", nargs="*", help="key=value training overrides (as for vlagym train)")
        b.set_defaults(func=cmd_bench)

    s = sub.add_parser("dagger", formatter_class=fmt, help="interactive imitation: roll out, expert-label, retrain",
                       description="DAgger from a trained policy: each round rolls out the policy (mixed with the "
                                   "expert at rate beta), labels every visited state with the scripted expert's "
                                   "plan, retrains on all the data from the previous weights and evaluates on "
                                   "validation seeds. Rerun the same command to resume.")
    from vlagym.experiments.dagger import DaggerConfig

    add_dataclass_args(s, DaggerConfig)
    s.set_defaults(func=cmd_dagger)

    _add_plot_command(sub, fmt, "dagger-plot", "several dagger runs' curves on one plot",
                      "Overlay the success-against-expert-labels curves (with 95% Wilson intervals) of several "
                      "`vlagym dagger` runs.", "dagger run folders", cmd_dagger_plot)

    s = sub.add_parser("collect", formatter_class=fmt, help="collect expert demonstrations into HDF5",
                       description="Run the scripted expert in worker processes and keep the first N "
                                   "successful episodes in robomimic-layout HDF5 shards, with a manifest "
                                   "and action statistics. Rerun the same command to resume.")
    s.add_argument("--env", required=True, help="env id")
    s.add_argument("--episodes", type=COUNT, required=True, help="successful episodes to keep")
    s.add_argument("--out", required=True, help="dataset folder")
    s.add_argument("--workers", type=COUNT, default=os.cpu_count() or 1, help="worker processes")
    s.add_argument("--split", choices=["train", "val", "test"], default="train",
                   help="seed split (train from 0, val from 1e6, test from 2e6)")
    s.add_argument("--seed-start", type=int, default=None, help="first seed (default: the split's start)")
    s.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise on expert actions")
    s.add_argument("--image-size", type=int, default=128, help="camera resolution")
    s.add_argument("--wrist-camera", action="store_true", help="also record rgb_wrist")
    s.add_argument("--kwargs", nargs="+", default=None, metavar="KEY=VALUE",
                   help="more env keyword arguments, e.g. action_mode=continuous")
    s.add_argument("--shard-size", type=int, default=50, help="episodes per HDF5 shard")
    s.add_argument("--level", choices=["train", "L1", "L2", "L3", "L4", "L5"], default=None,
                   help="generalization level of every episode (the train split takes only 'train'; "
                        "default: the union of all levels)")
    s.set_defaults(func=cmd_collect)

    s = sub.add_parser("dataset", formatter_class=fmt, help="inspect a dataset (info, show, verify)",
                       description="'info': episodes, frames, success, instructions, action statistics, size. "
                                   "'show': write one episode as a video with its instruction drawn on it. "
                                   "'verify': decode every chunk and check the stored checksums; exits 1 "
                                   "naming each bad file, demo, key and frame.")
    s.add_argument("action", choices=["info", "show", "verify"], help="what to do")
    s.add_argument("path", help="dataset folder")
    s.add_argument("--episode", type=int, default=0, help="episode index (show)")
    s.add_argument("--key", default="rgb", help="image key to show")
    s.add_argument("--out", default="episode.mp4", help="video file (show)")
    s.set_defaults(func=cmd_dataset)

    s = sub.add_parser("train", formatter_class=fmt, help="behavior cloning from a YAML config",
                       description="Train a policy (rt1, bcz, clip) on demonstration datasets. Settings come "
                                   "from --config (experiments/configs/*.yaml) and key=value overrides, e.g. "
                                   "steps=500 data=[runs/data] policy.horizon=5. The resolved config, "
                                   "TensorBoard logs, a resumable checkpoint/ and the best/ policy go in out=.")
    s.add_argument("--config", default=None, help="YAML config file")
    s.add_argument("--resume", action="store_true", help="continue the run in out= from its last checkpoint")
    s.add_argument("overrides", nargs="*", help="key=value overrides (policy.<field>=value for the policy)")
    s.add_argument("--trust-pickle", action="store_true",
                   help="allow --resume to unpickle a checkpoint that torch.load(weights_only=True) refuses (old "
                        "format; runs any code a crafted file holds)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", formatter_class=fmt, help="evaluate a policy beside the expert",
                       description="Roll out a trained policy and the scripted expert on the same held-out "
                                   "test seeds in worker processes; write report.json/report.md and videos. "
                                   "--suite generalization runs every level L1-L5 a task defines (each on its "
                                   "own test seeds); --suite robustness runs every visual perturbation at each "
                                   "--strengths (same seeds, level L1); both write a PNG plot beside the report.")
    s.add_argument("--policy", default=None,
                   help="policy folder or training run folder (uses best/), or an SB3 model .zip or `vlagym rl` "
                        "run folder; required unless --suite")
    s.add_argument("--env", nargs="+", default=None,
                   help="env ids (default: the one the policy was trained on, from its env_args.json)")
    s.add_argument("--episodes", type=COUNT, default=100, help="episodes per env")
    s.add_argument("--seed-start", type=int, default=TEST_SEED_START, help="first seed (test split)")
    s.add_argument("--workers", type=COUNT, default=None, help="worker processes (default: all cores)")
    s.add_argument("--video", default=None, help="folder for MP4s of the first episodes and a grid video")
    s.add_argument("--videos", type=int, default=4, help="episodes per env and agent recorded")
    s.add_argument("--gif", action="store_true", help="write per-episode GIFs instead of MP4s")
    s.add_argument("--no-expert", action="store_true", help="skip the expert row")
    s.add_argument("--out", default=None, help="folder for report.json and report.md")
    s.add_argument("--suite", choices=["generalization", "robustness"], default=None,
                   help="evaluate on every generalization level or every perturbation and strength")
    s.add_argument("--levels", nargs="+", default=None, help="levels for --suite generalization (default L1-L5)")
    s.add_argument("--perturbations", nargs="+", default=None,
                   help="perturbations for --suite robustness (default: all)")
    s.add_argument("--strengths", nargs="+", type=float, default=None,
                   help="strengths for --suite robustness besides 0 (default 0.25 0.5 1)")
    s.add_argument("--kwargs", nargs="+", default=None, metavar="KEY=VALUE",
                   help="env keyword arguments, e.g. level=L1, on top of those the policy was trained with (one "
                        "that changes what it sees or does, such as another image_size, is refused)")
    s.add_argument("--split", choices=["test", "val"], default="test",
                   help="seed split every seed must lie in (val from 1,000,000; test from 2,000,000)")
    s.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling an SB3 --policy zip that cannot be loaded safely (runs any code a "
                        "crafted file holds)")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("data-efficiency", formatter_class=fmt, help="success against the number of demonstrations",
                       description="Train the same config on the first N demos for each N, evaluate each best "
                                   "checkpoint on the same test seeds, and plot success (95% Wilson CI) against "
                                   "N. Rerunning resumes.")
    s.add_argument("--config", default=None, help="training YAML config (its data must hold max(--demos) demos)")
    s.add_argument("--demos", type=int, nargs="+", default=[25, 50, 100, 200], help="demonstration counts")
    s.add_argument("--episodes", type=COUNT, default=100, help="test episodes per count")
    s.add_argument("--seed-start", type=int, default=TEST_SEED_START, help="first test seed")
    s.add_argument("--workers", type=COUNT, default=None, help="evaluation worker processes (default: all cores)")
    s.add_argument("--out", required=True, help="output folder (one run per count, efficiency.json/.md/.png)")
    s.add_argument("overrides", nargs="*", help="key=value training overrides (as for vlagym train)")
    s.set_defaults(func=cmd_data_efficiency)

    s = sub.add_parser("regress", formatter_class=fmt, help="regression checks (golden rollouts, reports, policies)",
                       description="'record-golden'/'check-golden': pin and replay a fixed-action rollout as "
                                   "per-step observation hashes. 'compare': per-task one-sided Fisher exact test "
                                   "of a candidate report against a baseline (exit 1 on regression, 2 if the "
                                   "reports cannot be compared). 'check': evaluate a policy and exit 1 when the "
                                   "95% Wilson lower bound of its success is below --min-success.")
    rsub = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    r = rsub.add_parser("record-golden", formatter_class=fmt, help="record a golden rollout file")
    r.add_argument("--env", required=True, help="env id")
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="episode seeds")
    r.add_argument("--steps", type=int, default=10, help="fixed actions per seed")
    r.add_argument("--image-size", type=int, default=32, help="camera resolution")
    r.add_argument("--kwargs", nargs="+", default=None, metavar="KEY=VALUE", help="more env keyword arguments")
    r.add_argument("--out", required=True, help="golden JSON file")
    r = rsub.add_parser("check-golden", help="replay golden files; exit 1 on drift")
    r.add_argument("files", nargs="+", help="golden JSON files")
    r = rsub.add_parser("compare", formatter_class=fmt, help="compare two eval reports task by task")
    r.add_argument("--baseline", required=True, help="baseline report.json")
    r.add_argument("--candidate", required=True, help="candidate report.json")
    r.add_argument("--alpha", type=float, default=0.05, help="significance level")
    r.add_argument("--agent", default="policy", help="agent row to compare")
    r.add_argument("--allow-version-mismatch", action="store_true", help="compare across vlagym versions")
    r = rsub.add_parser("check", formatter_class=fmt, help="evaluate a policy against a success bar")
    r.add_argument("--policy", required=True, help="policy folder or training run folder")
    r.add_argument("--env", required=True, help="env id")
    r.add_argument("--min-success", type=float, required=True, help="bar for the 95%% Wilson lower bound")
    r.add_argument("--episodes", type=COUNT, default=100, help="test episodes")
    r.add_argument("--seed-start", type=int, default=TEST_SEED_START, help="first seed (test split)")
    r.add_argument("--workers", type=COUNT, default=None, help="worker processes (default: all cores)")
    r.add_argument("--kwargs", nargs="+", default=None, metavar="KEY=VALUE",
                   help="env keyword arguments on top of the policy's training env (e.g. level=L1)")
    s.set_defaults(func=cmd_regress)

    s = sub.add_parser("rl", formatter_class=fmt, help="reinforcement learning with stable-baselines3 (PPO, SAC)",
                       description="Train PPO or SAC on a vlagym env through the SB3 wrapper (instruction as a "
                                   "sentence embedding or token ids, channel-first images, a FiLM features "
                                   "extractor, or with --vl-model a vl-train model's towers), on the dense "
                                   "shaped reward, with vectorised envs, checkpoints, "
                                   "TensorBoard and a learning curve of deterministic success on validation "
                                   "seeds; then evaluate on test seeds through the evaluator (report.json). "
                                   "Rerun the same command to resume. `vlagym eval --policy OUT` loads the model.")
    s.add_argument("--algo", choices=["ppo", "sac"], default="ppo", help="algorithm")
    s.add_argument("--env", required=True, help="env id")
    s.add_argument("--timesteps", type=int, required=True, help="environment steps in total")
    s.add_argument("--out", default="runs/rl", help="run folder")
    s.add_argument("--kwargs", nargs="+", default=None, metavar="KEY=VALUE",
                   help="env keyword arguments, e.g. obs_mode=state image_size=64 action_mode=continuous "
                        "(reward_type defaults to dense)")
    s.add_argument("--init-from", default=None, help="BC-Z checkpoint (policy or BC run folder) for PPO's actor")
    s.add_argument("--init-log-std", type=float, default=None,
                   help="initial log std of PPO's Gaussian (default 0; -2 with --init-from)")
    s.add_argument("--instruction", choices=["sentence", "tokens"], default=None,
                   help="instruction observation: MiniLM embedding (sentence, used when not given) or hashed "
                        "word ids; with --vl-model it is the VL model's token ids")
    s.add_argument("--vl-model", default=None, metavar="DIR",
                   help="vl-train model folder (or its run folder): the features extractor starts from its vision "
                        "and text towers (needs camera images, not obs_mode=state)")
    s.add_argument("--vl-freeze", action="store_true",
                   help="keep the --vl-model towers' weights fixed (otherwise they train with the policy)")
    s.add_argument("--n-envs", type=int, default=2, help="parallel envs")
    s.add_argument("--vec", choices=["subproc", "dummy"], default="subproc", help="vectorised env kind")
    s.add_argument("--seed", type=int, default=0, help="seed of the model and the training envs")
    s.add_argument("--image-backbone", choices=["cnn", "resnet18", "efficientnet_lite0"], default=None,
                   help="FiLM vision encoder for pixel observations (cnn when not given; not with --vl-model)")
    s.add_argument("--net-arch", type=int, nargs="+", default=[64, 64], help="actor/critic hidden layers")
    s.add_argument("--lr", type=float, default=3e-4, help="learning rate")
    s.add_argument("--n-steps", type=int, default=256, help="PPO steps per env per rollout")
    s.add_argument("--batch-size", type=int, default=64, help="minibatch size")
    s.add_argument("--n-epochs", type=int, default=10, help="PPO epochs per rollout")
    s.add_argument("--gamma", type=float, default=0.99, help="discount")
    s.add_argument("--ent-coef", type=float, default=0.0, help="PPO entropy bonus")
    s.add_argument("--target-kl", type=float, default=None,
                   help="PPO: stop a rollout's epochs early past this approximate KL (fine-tuning)")
    s.add_argument("--critic-warmup", type=int, default=0,
                   help="PPO: steps at the start during which only the critic learns (use with --init-from)")
    s.add_argument("--max-minutes", type=float, default=None,
                   help="wall-clock budget of the training: stop early, save and evaluate when it runs out")
    s.add_argument("--eval-every", type=int, default=10_000, help="steps between learning-curve points")
    s.add_argument("--eval-episodes", type=COUNT, default=20, help="validation episodes per curve point")
    s.add_argument("--checkpoint-every", type=int, default=20_000, help="steps between checkpoints")
    s.add_argument("--test-episodes", type=int, default=50, help="test episodes at the end (0 skips)")
    s.add_argument("--videos", type=int, default=0, help="test episodes recorded as MP4s")
    s.add_argument("--workers", type=COUNT, default=1, help="worker processes of the final evaluation")
    s.add_argument("--device", default="cpu", help="torch device (cpu, cuda, auto)")
    s.add_argument("--trust-pickle", action="store_true",
                   help="allow a resume to unpickle a checkpoint zip that cannot be loaded safely (runs any code a "
                        "crafted file holds)")
    s.set_defaults(func=cmd_rl)

    _add_plot_command(sub, fmt, "rl-plot", "learning curves of several rl runs on one plot",
                      "Overlay the validation-success curves (curve.csv, with 95% Wilson bands) of several "
                      "`vlagym rl` runs, e.g. fine-tuning with and without --critic-warmup.", "rl run folders",
                      cmd_rl_plot)

    s = sub.add_parser("suite-compare", formatter_class=fmt, help="several policies' suite results side by side",
                       description="Put the reports of `vlagym eval --suite` for several policies in one table "
                                   "and one bar plot (with 95% Wilson intervals), condition by condition, e.g. a "
                                   "policy trained with and without visual randomization. Shared conditions must "
                                   "have been run on the same seeds.")
    s.add_argument("reports", nargs="+", help="suite output folders (or their report.json)")
    s.add_argument("--labels", nargs="+", default=None, help="column names (default: the folder names)")
    s.add_argument("--out", required=True, help="folder for compare.md, compare.json and compare.png")
    s.set_defaults(func=cmd_suite_compare)

    s = sub.add_parser("vl-data", formatter_class=fmt, help="render captioned tabletop images for vision-language",
                       description="Render tabletop scenes (random arm poses and object layouts; front and wrist "
                                   "cameras) and write image-caption pairs: true captions from templates, object "
                                   "boxes and masks from PyBullet's segmentation and referring expressions. "
                                   "Rerun the same command to resume.")
    s.add_argument("--env", nargs="+", required=True, help="tabletop env ids")
    s.add_argument("--images", type=int, required=True, help="images to keep")
    s.add_argument("--out", required=True, help="dataset folder")
    s.add_argument("--split", choices=["train", "val", "test"], default="train",
                   help="seed split (held-out evaluation data: test)")
    s.add_argument("--image-size", type=int, default=64, help="camera resolution")
    s.add_argument("--cameras", nargs="+", default=["rgb", "rgb_wrist"], help="cameras to render")
    s.add_argument("--p-in-bowl", type=float, default=0.5, help="chance to set an object in a bowl")
    s.add_argument("--kwargs", nargs="+", default=None, metavar="KEY=VALUE", help="more env keyword arguments")
    s.set_defaults(func=cmd_vl_data)

    s = sub.add_parser("vl-train", formatter_class=fmt, help="contrastive pre-training of an open_clip model",
                       description="Train or fine-tune an open_clip model (a small ViT by default) on vl-data "
                                   "pairs with the symmetric InfoNCE loss, learned temperature and optional hard "
                                   "negatives; evaluate Recall@1/5/10, MRR and an attribute-binding probe on "
                                   "held-out scenes against the starting point. key=value overrides set "
                                   "VLTrainConfig fields (steps=300 hard_negatives=false model_cfg.vision_cfg."
                                   "width=96 ...). Rerun to resume.")
    s.add_argument("--data", default=None, help="training vl-data folder")
    s.add_argument("--eval-data", default=None, help="held-out vl-data folder")
    s.add_argument("--out", default=None, help="run folder (default runs/vl)")
    s.add_argument("overrides", nargs="*", help="key=value overrides")
    s.add_argument("--trust-pickle", action="store_true",
                   help="allow a resume to unpickle a checkpoint.pt that torch.load(weights_only=True) refuses "
                        "(runs any code a crafted file holds)")
    s.set_defaults(func=cmd_vl_train)

    s = sub.add_parser("vl-ground", formatter_class=fmt, help="train and evaluate the grounding head",
                       description="Over a frozen vl-train model, train the small head that turns the patch-text "
                                   "similarity map into a match map and a box, on vl-data boxes and masks; report "
                                   "pointing accuracy (similarity map and head) and detection F1 at IoU 0.5 on "
                                   "held-out scenes.")
    s.add_argument("--model", required=True, help="vl-train run or model folder")
    s.add_argument("--data", required=True, help="training vl-data folder")
    s.add_argument("--eval-data", default=None, help="held-out vl-data folder")
    s.add_argument("--out", default=None, help="head folder (default: grounding/ beside the model)")
    s.add_argument("--steps", type=int, default=1500, help="head training steps")
    s.add_argument("--batch-size", type=int, default=256, help="queries per step")
    s.add_argument("--seed", type=int, default=0, help="seed")
    s.set_defaults(func=cmd_vl_ground)

    s = sub.add_parser("ground", formatter_class=fmt, help="locate a referring expression in an image",
                       description="Draw the heat map and box for a query such as 'the small yellow cylinder' on "
                                   "an image, with a vl-train run (its grounding/ head when present).")
    s.add_argument("--model", required=True, help="vl-train run folder (or a grounding/ or model/ folder)")
    s.add_argument("--image", required=True, help="input image (PNG, JPEG)")
    s.add_argument("--query", required=True, help="referring expression")
    s.add_argument("--out", default="ground.png", help="output PNG")
    s.add_argument("--scale", type=int, default=4, help="upscaling of the drawn image")
    s.set_defaults(func=cmd_ground)

    s = sub.add_parser("envs", help="list registered environment ids", description="List registered ids.")
    s.set_defaults(func=cmd_envs)
    _add_debug(p)
    return p


def _add_debug(parser: argparse.ArgumentParser, top: bool = True) -> None:
    """``--debug`` before or after the subcommand (``vlagym --debug eval ...`` or ``vlagym eval ... --debug``)."""
    parser.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="show the traceback of an error instead of one line")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _add_debug(sub, top=False)


def _user_errors() -> tuple[type[BaseException], ...]:
    """What a user's input can cause (a bad flag value, file, dataset or machine), printed as one line."""
    import yaml

    from vlagym.agents.rollout import WorkerCrash
    from vlagym.dataio.dataset import DatasetError

    return (ValueError, KeyError, OSError, DatasetError, FloatingPointError, WorkerCrash, yaml.YAMLError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as e:
        if args.debug:
            raise
        text = e.args[0] if isinstance(e, KeyError) and e.args else e
        message = " ".join(str(text).split()) or type(e).__name__
        print(f"vlagym {args.command}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
