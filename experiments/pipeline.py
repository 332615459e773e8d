"""The main job (``vlagym pipeline``): the whole pipeline on its embedded default.

1. collect expert demonstrations for the training task (train seeds, resumable);
2. train a policy on them by behavior cloning (resumes if the run folder holds a checkpoint);
3. evaluate the policy beside the expert on held-out test seeds, with videos;
4. record one expert episode on every registered task (tabletop and navigation);
5. write ``report.json`` / ``report.md`` and the page ``report.html`` (``vlagym report``) with everything, and
   print where they are.

Rerunning the same command continues where an interrupted run stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vlagym.agents.collect import CollectConfig, collect
from vlagym.agents.rollout import Job, run_jobs, video_kwargs
from vlagym.agents.video import grid, write_video
from vlagym.core.provenance import provenance
from vlagym.core.splits import TEST_SEED_START
from vlagym.envs import ENV_IDS
from vlagym.experiments.html_report import write_html_report
from vlagym.experiments.report import agents_table, build_report, write_report

# How each policy trains in the main job: the settings that reached the best success within a CPU
# budget in README's "Results" (64 px, front and wrist cameras where the policy reads both).
RECIPES: dict[str, dict] = {
    # Grounded (step 11): heatmap, position and yaw heads on the privileged labels, fed to the action head,
    # and learned words beside MiniLM (experiments/configs/bcz_grounded_pickup.yaml).
    "bcz": {"backbone_width": 16, "pool": "spatial_softmax", "output_stride": 16,
            "extra_image_keys": ["rgb_wrist"], "heatmap_weight": 1.0, "position_weight": 1.0, "yaw_weight": 1.0,
            "feed_location": True, "text_encoder": "sentence+words"},
    "rt1": {"image_key": "rgb_wrist", "history": 2, "pretrained_backbone": "imagenet-lite0", "d_model": 128,
            "num_layers": 4, "num_heads": 4, "ff_dim": 256, "map_pos_embedding": True},
    "clip": {},
}


@dataclass
class PipelineConfig:
    """Sizes of the main job. The defaults take about 10 minutes on a 2-core CPU machine."""

    out: str = "runs/main"
    """Output folder: data/, train/, eval/, videos/, report.json, report.md, report.html (+ report_media/)."""
    train_env: str = "vlagym/TabletopPickUp-v0"
    """The task the policy learns."""
    policy: str = "bcz"
    """Policy to train: bcz, rt1 or clip."""
    policy_overrides: dict | None = None
    """Fields of the policy config to override (None: the policy's entry in ``RECIPES``)."""
    demos: int = 1000
    """Expert demonstrations to collect (train split)."""
    noise: float = 0.1
    """Std of the Gaussian noise on the expert's actions during collection (states off its path)."""
    labels: str = "expert_actions"
    """What BC learns: the expert's noiseless plan at each visited state, or the executed ``actions``."""
    image_size: int = 64
    """Camera resolution for data, training and evaluation."""
    wrist_camera: bool = True
    """Also render the wrist camera (tabletop tasks), for policies that read it."""
    train_steps: int = 6000
    """Behavior-cloning optimizer steps."""
    lr: float = 1e-3
    """Peak learning rate."""
    batch_size: int = 32
    """Samples per training step."""
    val_episodes: int = 20
    """Validation episodes per evaluation during training (best checkpoint selection)."""
    eval_episodes: int = 100
    """Test episodes for the policy and the expert."""
    videos: int = 4
    """Test episodes per agent recorded as MP4 (plus a grid video)."""
    showcase_envs: tuple[str, ...] = tuple(ENV_IDS)
    """Envs that get one recorded expert episode each (tabletop and navigation)."""
    workers: int | None = None
    """Worker processes for collection and evaluation (default: all cores)."""

    @classmethod
    def quick(cls, **kw) -> PipelineConfig:
        """A first look in about three minutes."""
        return cls(**{"demos": 20, "train_steps": 150, "batch_size": 16, "val_episodes": 3, "eval_episodes": 6,
                      "videos": 2, **kw})

    def env_kwargs(self) -> dict:
        from vlagym.envs import TABLETOP_IDS

        wrist = self.wrist_camera and self.train_env in TABLETOP_IDS
        return {"image_size": self.image_size, **({"wrist_camera": True} if wrist else {})}

    def overrides(self) -> dict:
        return dict(RECIPES.get(self.policy, {}) if self.policy_overrides is None else self.policy_overrides)


def run_pipeline(cfg: PipelineConfig, log=print) -> dict:
    from vlagym.agents.evaluation import validation_success
    from vlagym.experiments.evaluate import evaluate
    from vlagym.policies.train import TrainConfig, train

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    timings = {}
    name = cfg.train_env.split("/")[-1]

    log(f"[1/5] collecting {cfg.demos} expert demonstrations of {cfg.train_env}")
    data = out / "data" / name
    t = time.time()
    manifest = collect(CollectConfig(env=cfg.train_env, episodes=cfg.demos, out=str(data), workers=cfg.workers or 2,
                                     noise=cfg.noise, env_kwargs=cfg.env_kwargs()))
    timings["collect_s"] = round(time.time() - t, 1)

    log(f"[2/5] training {cfg.policy} for {cfg.train_steps} steps")
    run = out / "train" / f"{cfg.policy}_{name}"
    t = time.time()
    train_cfg = TrainConfig(data=[str(data)], policy=cfg.policy, policy_overrides=cfg.overrides(),
                            out=str(run), steps=cfg.train_steps, batch_size=cfg.batch_size, lr=cfg.lr,
                            labels=cfg.labels,
                            warmup_steps=min(100, cfg.train_steps // 10), eval_every=max(1, cfg.train_steps // 4),
                            eval_episodes=cfg.val_episodes, save_every=max(1, cfg.train_steps // 6), num_workers=1)
    summary = train(train_cfg, resume=(run / "config.yaml").exists(), validate=validation_success)
    timings["train_s"] = round(time.time() - t, 1)

    log(f"[3/5] evaluating the policy and the expert on {cfg.eval_episodes} test seeds")
    t = time.time()
    evaluation = evaluate(str(run), [cfg.train_env], cfg.eval_episodes, seed_start=TEST_SEED_START,
                          workers=cfg.workers, video_dir=str(out / "videos"), videos_per_env=cfg.videos,
                          out=str(out / "eval"), on_change="restart")
    timings["eval_s"] = round(time.time() - t, 1)

    log(f"[4/5] recording one expert episode on each of {len(cfg.showcase_envs)} tasks")
    t = time.time()
    jobs = [Job(e, TEST_SEED_START, record=True, env_kwargs=tuple(video_kwargs(e).items()))
            for e in cfg.showcase_envs]
    showcase = run_jobs(jobs, workers=cfg.workers, desc="expert videos")
    videos = [str(write_video(out / "videos" / f"expert_{e.env_id.split('/')[-1]}_showcase.mp4", e.frames))
              for e in showcase]
    videos.append(str(write_video(out / "videos" / "expert_all_tasks_grid.mp4",
                                  grid([e.frames for e in showcase]))))
    timings["showcase_s"] = round(time.time() - t, 1)

    log("[5/5] writing the report")
    report = {
        "provenance": provenance(),
        "job": "pipeline",
        "config": asdict(cfg),
        "dataset": {"path": str(data), **{k: manifest[k] for k in ("episodes", "frames", "dropped_failures",
                                                                  "seed_range", "split")}},
        "training": {**summary, "steps": cfg.train_steps, "policy": cfg.policy},
        "agents": evaluation["agents"],
        "showcase": build_report({"expert": showcase}, {})["agents"]["expert"],
        "videos": evaluation["videos"] + videos,
        "timings": {**timings, "total_s": round(time.time() - t0, 1)},
    }
    json_path, md_path = write_report(report, out)
    md_path.write_text(_markdown(report))
    html_path = write_html_report([out], out / "report.html", labels=[f"{cfg.policy} {name}"],
                                  title=f"vlagym main job: {cfg.policy} on {name}")
    log(f"report page: {html_path}")
    report["paths"] = {"report_json": str(json_path), "report_md": str(md_path), "report_html": str(html_path),
                       "videos": str(out / "videos")}
    return report


def _markdown(report: dict) -> str:
    cfg, ds, tr = report["config"], report["dataset"], report["training"]
    lines = [
        "# vlagym main job",
        "",
        f"* data: {ds['episodes']} expert demonstrations of {cfg['train_env']} ({ds['frames']} frames, "
        f"{ds['dropped_failures']} failed expert episodes dropped), train seeds {ds['seed_range'][0]}.."
        f"{ds['seed_range'][1]}, expert noise {cfg['noise']}, "
        f"{cfg['image_size']} px" + (", front and wrist cameras" if cfg['wrist_camera'] else ""),
        f"* training: {tr['policy']} for {tr['steps']} steps on the {cfg['labels']} labels, "
        f"final loss {tr['final_loss']}; best checkpoint at "
        f"step {tr['best']['step']} with validation success {tr['best']['success_rate']:.0%}",
        f"* evaluation: {cfg['eval_episodes']} test seeds from {TEST_SEED_START}, policy and expert on the same seeds",
        f"* wall time: {report['timings']['total_s'] / 60:.1f} min ({json.dumps(report['timings'])})",
        "",
    ]
    lines += agents_table(report["agents"])
    lines += ["", "## One expert episode per task", ""] + agents_table({"expert": report["showcase"]})
    lines += ["", "## Videos", ""] + [f"* {v}" for v in report["videos"]]
    return "\n".join(lines) + "\n"
