"""Reinforcement learning with stable-baselines3 (``vlagym rl``): PPO or SAC on any vlagym env.

A run folder holds::

    rl_config.json     the settings (checked on resume), with the VL model a run started from (``vl_model``, the
                       SHA-256 of its weights) when ``--vl-model`` is given
    env_args.json      the env kwargs, so `vlagym eval --policy RUN` builds the same env
    checkpoints/       SB3 zips every --checkpoint-every steps (resume continues from the newest)
    tb/                TensorBoard: SB3's losses, rollout/success_rate, eval/success_rate
    curve.csv          timesteps, wall time, deterministic success on validation seeds (+ Wilson CI)
    curve.png          that learning curve
    model.zip          the final model (what `vlagym eval --policy RUN` loads)
    eval/              report.json / report.md on test seeds through the step-5 evaluator (+ videos)

Training reward is the env's dense shaped reward by default (``reward_type="dense"``); every number
reported is the sparse success (``info["success"]``).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlagym.core.env_args import make_env_args
from vlagym.core.io import atomic_write_text
from vlagym.core.resume import differing_keys
from vlagym.core.splits import SPLIT_SEED_START
from vlagym.experiments.report import save_figure

logger = logging.getLogger(__name__)

ALGOS = ("ppo", "sac")
CURVE_FIELDS = ("timesteps", "wall_s", "episodes", "successes", "success_rate", "ci_low", "ci_high",
                "train_success_rate")


@dataclass
class RLConfig:
    """Settings of one ``vlagym rl`` run."""

    env: str = "vlagym/TabletopTouch-v0"
    """Registered env id."""
    algo: str = "ppo"
    """``"ppo"`` or ``"sac"`` (SAC needs a Box action space: navigation with action_mode=continuous)."""
    timesteps: int = 100_000
    """Environment steps in total (all envs together)."""
    out: str = "runs/rl"
    """Run folder."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Env keyword arguments (``obs_mode``, ``image_size``, ``action_mode``, ...); ``reward_type`` defaults
    to ``"dense"``."""
    instruction: dict[str, Any] | None = None
    """``InstructionEncoder`` fields: ``{"kind": "sentence"}`` (MiniLM embedding, the default) or ``{"kind":
    "tokens"}``; with ``vl_model``, the VL model's token ids (``{"kind": "clip", ...}``, set by the run)."""
    n_envs: int = 2
    """Parallel envs."""
    vec: str = "subproc"
    """``"subproc"`` (SubprocVecEnv, one process per env) or ``"dummy"`` (DummyVecEnv, in process)."""
    seed: int = 0
    """Seeds the model and the training envs (env i starts from seed + i)."""
    image_backbone: str | None = None
    """Vision encoder for pixel observations (``vlagym.policies.rl.IMAGE_BACKBONES``; default ``"cnn"``); none
    with ``vl_model``, whose vision tower is the encoder."""
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden layers of the actor and critic MLPs on top of the features."""
    learning_rate: float = 3e-4
    """Learning rate of the optimizer (constant)."""
    n_steps: int = 256
    """PPO: steps per env per rollout."""
    batch_size: int = 64
    """Minibatch size."""
    n_epochs: int = 10
    """PPO: passes over each rollout."""
    gamma: float = 0.99
    """Discount factor."""
    ent_coef: float = 0.0
    """PPO: entropy bonus coefficient."""
    target_kl: float | None = None
    """PPO: stop a rollout's epochs early once the approximate KL to the rollout policy passes 1.5x this
    (SB3's ``target_kl``); keeps fine-tuning near the policy that collected the data."""
    buffer_size: int = 100_000
    """SAC: replay buffer size."""
    learning_starts: int = 1000
    """SAC: random steps before learning."""
    init_from: str | None = None
    """A BC-Z checkpoint (policy or BC run folder) to start the PPO actor from."""
    vl_model: str | None = None
    """A ``vlagym vl-train`` model folder (or its run folder): the features extractor is its vision and text
    towers (``VLFeaturesExtractor``) and the instruction its token ids. Recorded as the model folder's absolute
    path."""
    vl_freeze: bool = False
    """Keep the VL towers' weights fixed (default: they train with the policy)."""
    vl_weights_sha256: str | None = None
    """Set by the run: SHA-256 of the VL weights file it started from (a resume refuses other weights)."""
    init_log_std: float | None = None
    """Initial log standard deviation of PPO's Gaussian (default 0; -2 with ``init_from``, to stay near BC)."""
    critic_warmup: int = 0
    """PPO: environment steps at the start during which only the critic learns (the actor, its encoder and
    its log std frozen). With ``init_from``, a randomly initialised critic's advantages otherwise push
    the BC actor in random directions and its success falls before the critic knows anything."""
    max_minutes: float | None = None
    """Wall-clock budget of this invocation's training: stop (saving, evaluating) when it runs out."""
    eval_every: int = 10_000
    """Steps between deterministic evaluations on validation seeds (the learning curve)."""
    eval_episodes: int = 20
    """Validation episodes per curve point."""
    checkpoint_every: int = 20_000
    """Steps between checkpoints."""
    test_episodes: int = 50
    """Episodes on test seeds at the end, through the evaluator (0 skips)."""
    videos: int = 0
    """Test episodes recorded as videos at the end."""
    workers: int = 1
    """Worker processes of the final evaluation."""
    device: str = "cpu"
    """Torch device (``"auto"`` picks CUDA when present)."""

    def __post_init__(self) -> None:
        from vlagym.envs import check_env_id

        check_env_id(self.env)
        if self.algo not in ALGOS:
            raise ValueError(f"RLConfig.algo must be one of {ALGOS}, got {self.algo!r}")
        if self.vec not in ("subproc", "dummy"):
            raise ValueError(f"RLConfig.vec must be 'subproc' or 'dummy', got {self.vec!r}")
        for name in ("timesteps", "n_envs", "n_steps", "batch_size", "n_epochs", "eval_every", "eval_episodes",
                     "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"RLConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.critic_warmup < 0:
            raise ValueError(f"RLConfig.critic_warmup must be >= 0, got {self.critic_warmup!r}")
        if self.critic_warmup and self.algo != "ppo":
            raise ValueError("RLConfig.critic_warmup is for PPO (SAC's actor and critics train from a replay buffer)")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"RLConfig.max_minutes must be > 0, got {self.max_minutes!r}")
        if self.test_episodes < 0 or self.videos < 0:
            raise ValueError("RLConfig.test_episodes and videos must be >= 0")
        if self.init_from is not None and self.algo != "ppo":
            raise ValueError("init_from (BC initialisation) is supported for PPO only")
        if self.vl_model is not None:
            if self.init_from is not None:
                raise ValueError(f"vl_model={self.vl_model!r} and init_from={self.init_from!r} both choose the "
                                 "features extractor; pass one")
            if self.image_backbone is not None:
                raise ValueError(f"image_backbone={self.image_backbone!r} does not apply with vl_model: the VL "
                                 "model's vision tower encodes the images")
            kind = (self.instruction or {}).get("kind", "clip")
            if kind != "clip":
                raise ValueError(f"with vl_model the instruction is the VL model's token ids (kind 'clip'), "
                                 f"got instruction kind {kind!r}")
        else:
            if self.vl_freeze:
                raise ValueError("vl_freeze needs vl_model (the towers to freeze)")
            self.image_backbone = self.image_backbone or "cnn"
            self.instruction = {"kind": "sentence"} if self.instruction is None else dict(self.instruction)
        self.env_kwargs = {"reward_type": "dense", **dict(self.env_kwargs)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- envs ------------------------------------------------------------------------------------------------------
def _make_env(env_id: str, env_kwargs: dict, instruction: dict):
    def thunk():
        from stable_baselines3.common.monitor import Monitor

        import vlagym  # noqa: F401  (registers ids in worker processes)
        from vlagym.policies.sb3_env import make_sb3_env

        return Monitor(make_sb3_env(env_id, instruction, **env_kwargs), info_keywords=("success",))

    return thunk


def make_vec_env(cfg: RLConfig):
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    fns = [_make_env(cfg.env, cfg.env_kwargs, cfg.instruction) for _ in range(cfg.n_envs)]
    venv = SubprocVecEnv(fns) if cfg.vec == "subproc" and cfg.n_envs > 1 else DummyVecEnv(fns)
    venv.seed(cfg.seed)
    return venv


# --- the model -------------------------------------------------------------------------------------------------
def _bc_source(path: str) -> tuple[Any, dict[str, Any]]:
    from vlagym.agents.policy_agent import policy_env_kwargs, resolve_policy_dir
    from vlagym.policies import load_policy

    policy = load_policy(resolve_policy_dir(path))
    if policy.name != "bcz":
        raise ValueError(f"--init-from supports BC-Z checkpoints; {path} holds a {policy.name!r} policy")
    return policy, policy_env_kwargs(path)


def _adopt_bc(cfg: RLConfig):
    """Load the BC-Z policy of ``init_from`` and make the run's env and instruction match it."""
    bc_policy, bc_kwargs = _bc_source(cfg.init_from)
    mismatch = {k: (v, cfg.env_kwargs[k]) for k, v in bc_kwargs.items() if cfg.env_kwargs.get(k, v) != v}
    if mismatch:
        raise ValueError(f"env kwargs differ from the BC policy's (BC value, RL value): {mismatch}")
    cfg.env_kwargs = {**bc_kwargs, **cfg.env_kwargs}
    bc = bc_policy.config
    if bc.text_encoder in ("hash", "random"):
        cfg.instruction = {"kind": "tokens", "buckets": int(bc_policy.text.buckets)}
    else:
        cfg.instruction = {"kind": "sentence", "model": bc.text_model}
    return bc_policy


def _adopt_vl(cfg: RLConfig) -> dict[str, Any]:
    """Resolve ``vl_model`` to its model folder, record it (absolute path, weights SHA-256) and make the
    instruction the VL model's token ids; returns the extractor's ``vl_config``."""
    import hashlib

    from vlagym.policies.rl import read_vl_extractor_config, vl_instruction
    from vlagym.vl.model import WEIGHTS, resolve_model_dir

    directory = resolve_model_dir(cfg.vl_model).resolve()
    vl_config = read_vl_extractor_config(directory)
    weights = directory / WEIGHTS
    if not weights.exists():
        raise FileNotFoundError(f"{weights} is missing; is {directory} a model folder written by vl-train?")
    if cfg.env_kwargs.get("obs_mode") == "state":
        raise ValueError(f"the VL model in {directory} has an image encoder, but the env is made with "
                         "obs_mode='state' (no image); drop obs_mode=state from the env kwargs")
    digest = hashlib.sha256()
    with weights.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    cfg.vl_model, cfg.vl_weights_sha256 = str(directory), digest.hexdigest()
    cfg.instruction = vl_instruction(vl_config)
    return vl_config


def build_model(cfg: RLConfig, venv, bc_policy=None, vl_config: dict[str, Any] | None = None):
    """A fresh PPO or SAC model for ``cfg`` on ``venv``: features from BC-Z (``bc_policy``, PPO only), from the
    VL model's towers (``vl_config`` from ``_adopt_vl``; weights loaded from ``cfg.vl_model``) or
    ``VLAFeaturesExtractor``."""
    from stable_baselines3 import PPO, SAC

    from vlagym.policies.rl import (
        BCZFeaturesExtractor,
        VLAFeaturesExtractor,
        VLFeaturesExtractor,
        init_actor_from_bcz,
        load_vl_weights,
    )

    common = dict(seed=cfg.seed, device=cfg.device, tensorboard_log=str(Path(cfg.out) / "tb"), verbose=0)
    if vl_config is not None:
        policy_kwargs = dict(
            features_extractor_class=VLFeaturesExtractor,
            features_extractor_kwargs={"vl_config": vl_config, "freeze": cfg.vl_freeze,
                                       "instruction": cfg.instruction},
            normalize_images=False, net_arch=list(cfg.net_arch),
        )
    elif bc_policy is not None:
        policy_kwargs = dict(
            features_extractor_class=BCZFeaturesExtractor,
            features_extractor_kwargs={"bcz_config": bc_policy.config.to_dict(), "instruction": cfg.instruction},
            share_features_extractor=False, normalize_images=False,
            net_arch=dict(pi=[], vf=list(cfg.net_arch)),
        )
    else:
        policy_kwargs = dict(
            features_extractor_class=VLAFeaturesExtractor,
            features_extractor_kwargs={"image_backbone": cfg.image_backbone, "instruction": cfg.instruction},
            normalize_images=False, net_arch=list(cfg.net_arch),
        )
    if cfg.algo == "ppo":
        if bc_policy is None:
            policy_kwargs["log_std_init"] = 0.0 if cfg.init_log_std is None else cfg.init_log_std
        model = PPO("MultiInputPolicy", venv, learning_rate=cfg.learning_rate, n_steps=cfg.n_steps,
                    batch_size=cfg.batch_size, n_epochs=cfg.n_epochs, gamma=cfg.gamma, ent_coef=cfg.ent_coef,
                    target_kl=cfg.target_kl,
                    policy_kwargs=policy_kwargs, **common)
        if bc_policy is not None:
            init_actor_from_bcz(model.policy, bc_policy, -2.0 if cfg.init_log_std is None else cfg.init_log_std)
    else:
        from gymnasium import spaces

        if not isinstance(venv.action_space, spaces.Box):
            raise ValueError(f"SAC needs a continuous (Box) action space; {cfg.env} has {venv.action_space} "
                             "(for navigation pass env kwargs action_mode=continuous)")
        model = SAC("MultiInputPolicy", venv, learning_rate=cfg.learning_rate, buffer_size=cfg.buffer_size,
                    learning_starts=cfg.learning_starts, batch_size=cfg.batch_size, gamma=cfg.gamma,
                    policy_kwargs=policy_kwargs, **common)
    if vl_config is not None:
        load_vl_weights(model.policy, cfg.vl_model)
    return model


# --- callbacks -------------------------------------------------------------------------------------------------
def _sb3_callbacks(cfg: RLConfig, run: Path, t0: float):
    from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback

    started = time.time()

    class CurveCallback(BaseCallback):
        """Deterministic success on validation seeds every ``eval_every`` steps -> curve.csv and TensorBoard;
        training-episode success (from Monitor) -> TensorBoard; a progress bar."""

        def __init__(self) -> None:
            super().__init__()
            self.next_eval = 0
            self.bar = None

        def _on_training_start(self) -> None:
            from tqdm import tqdm

            done = self.model.num_timesteps
            self.next_eval = (done // cfg.eval_every + (1 if done else 0)) * cfg.eval_every
            self.bar = tqdm(total=cfg.timesteps, initial=done, desc=f"rl {cfg.algo}", unit="step",
                            dynamic_ncols=True)
            if done == 0:
                self._evaluate()

        def _on_step(self) -> bool:
            self.bar.update(self.training_env.num_envs)
            if self.model.num_timesteps >= self.next_eval:
                self._evaluate()
            if cfg.max_minutes is not None and time.time() - started > 60 * cfg.max_minutes:
                logger.warning("--max-minutes %s reached at %d steps; stopping", cfg.max_minutes,
                               self.model.num_timesteps)
                if _last_curve_step(run) < self.model.num_timesteps:
                    self._evaluate()
                return False
            return True

        def _on_rollout_end(self) -> None:
            buf = [ep["success"] for ep in self.model.ep_info_buffer if "success" in ep]
            if buf:
                self.logger.record("rollout/success_rate", float(np.mean(buf)))
            if cfg.critic_warmup:  # PPO only (checked by RLConfig); this runs right before PPO's update
                frozen = self.model.num_timesteps <= cfg.critic_warmup
                set_actor_trainable(self.model.policy, not frozen)
                self.logger.record("train/actor_frozen", float(frozen))

        def _on_training_end(self) -> None:
            # The last rollout overshoots `timesteps` by up to n_steps * n_envs; one point at the end is enough.
            if self.model.num_timesteps >= cfg.timesteps and _last_curve_step(run) < cfg.timesteps:
                self._evaluate()
            self.bar.close()

        def _evaluate(self) -> None:
            row = validation_point(self.model, cfg, t0)
            self.logger.record("eval/success_rate", row["success_rate"])
            self.logger.dump(self.model.num_timesteps)
            append_curve(run, row)
            self.bar.set_postfix(val_success=f"{row['successes']}/{row['episodes']}")
            self.next_eval = (self.model.num_timesteps // cfg.eval_every + 1) * cfg.eval_every

    every = max(cfg.checkpoint_every // cfg.n_envs, 1)
    return [CurveCallback(), CheckpointCallback(every, str(run / "checkpoints"), name_prefix="rl_model")]


def actor_parameters(policy) -> list:
    """The parameters that only shape PPO's action distribution: the action head, the log std, the
    actor's MLP and, when the actor has its own, its features extractor."""
    modules = [policy.action_net, policy.mlp_extractor.policy_net]
    if not policy.share_features_extractor:
        modules.append(policy.pi_features_extractor)
    params = [p for m in modules for p in m.parameters()]
    if isinstance(getattr(policy, "log_std", None), torch.nn.Parameter):
        params.append(policy.log_std)
    return params


def set_actor_trainable(policy, trainable: bool) -> None:
    """Freeze or release the actor (``actor_parameters``); the critic always trains. With a shared features
    extractor the encoder keeps training through the value loss."""
    for p in actor_parameters(policy):
        p.requires_grad_(trainable)


def validation_point(model, cfg: RLConfig, t0: float) -> dict[str, Any]:
    """Deterministic success on ``eval_episodes`` validation seeds (the same seeds at every point), played by the
    evaluator with the live model, as ``vlagym eval`` plays its saved zip; the sparse reward (the kwargs without
    ``reward_type``), as at test time."""
    from vlagym.agents.evaluation import evaluate_agent

    kwargs = {k: v for k, v in cfg.env_kwargs.items() if k != "reward_type"}
    seeds = range(SPLIT_SEED_START["val"], SPLIT_SEED_START["val"] + cfg.eval_episodes)
    summary = evaluate_agent(model, cfg.env, seeds, kwargs).summary
    lo, hi = summary["success_ci95"]
    train = [ep["success"] for ep in model.ep_info_buffer if "success" in ep]
    return {"timesteps": int(model.num_timesteps), "wall_s": round(time.time() - t0, 1),
            "episodes": summary["episodes"], "successes": summary["successes"],
            "success_rate": summary["success_rate"], "ci_low": lo, "ci_high": hi,
            "train_success_rate": float(np.mean(train)) if train else ""}


def _last_curve_step(run: Path) -> int:
    rows = read_curve(run)
    return int(rows[-1]["timesteps"]) if rows else -1


def read_curve(run: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(run) / "curve.csv"
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def append_curve(run: Path, row: dict[str, Any]) -> None:
    rows = [r for r in read_curve(run) if int(r["timesteps"]) < row["timesteps"]] + [row]
    _write_curve(run, rows)


def _write_curve(run: Path, rows: list[dict[str, Any]]) -> None:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CURVE_FIELDS)
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in CURVE_FIELDS})
    atomic_write_text(run / "curve.csv", buf.getvalue())


def plot_curve(run: str | os.PathLike, out: str | os.PathLike | None = None, title: str | None = None) -> Path:
    """curve.csv -> PNG: validation success (with its 95% Wilson band) against environment steps."""
    run = Path(run)
    return plot_curves({None: run}, out or run / "curve.png", title or run.name)


def plot_curves(runs: dict[str | None, str | os.PathLike], out: str | os.PathLike, title: str = "") -> Path:
    """Several runs' learning curves on one plot (``{label: run folder}``), each with its Wilson band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    for label, run in runs.items():
        rows = read_curve(run)
        if not rows:
            raise FileNotFoundError(f"{run}/curve.csv is missing or empty; is {run} a vlagym rl run?")
        x = np.array([float(r["timesteps"]) for r in rows])
        y, lo, hi = (np.array([float(r[k]) for r in rows]) for k in ("success_rate", "ci_low", "ci_high"))
        name = f"validation success ({rows[0]['episodes']} seeds)" if label is None else label
        line, = ax.plot(x, y, marker="o", ms=3, label=name)
        ax.fill_between(x, lo, hi, alpha=0.15, color=line.get_color(),
                        label="95% Wilson interval" if label is None else None)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out)


# --- the run ---------------------------------------------------------------------------------------------------
_CKPT = re.compile(r"rl_model_(\d+)_steps\.zip$")


def latest_checkpoint(run: Path) -> tuple[Path, int] | None:
    found = [(p, int(m.group(1))) for p in (run / "checkpoints").glob("rl_model_*_steps.zip")
             if (m := _CKPT.search(p.name))]
    return max(found, key=lambda t: t[1]) if found else None


def _check_resume(run: Path, cfg: RLConfig) -> None:
    path = run / "rl_config.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    # What may change between invocations: how long to train and what to do at the end.
    free = {"timesteps", "test_episodes", "videos", "workers", "eval_every", "checkpoint_every", "max_minutes"}
    new = cfg.to_dict()
    # Only the settings the run recorded: one this version added is no reason to refuse an older run.
    diff = differing_keys(old, {k: new.get(k) for k in old}, free)
    if diff:
        raise ValueError(f"{run} holds a run with different settings ({', '.join(diff)}); pass another --out "
                         "or delete the folder")


def train_rl(cfg: RLConfig, trust_pickle: bool | None = None) -> dict[str, Any]:
    """Train (or resume) a run and evaluate it; returns a summary with the paths.

    A resume loads the newest checkpoint zip without unpickling (``vlagym.agents.safe_load.load_sb3``: spaces
    from the vectorised env, schedules as constants); ``trust_pickle`` allows SB3's unpickling load instead.
    No replay buffer is saved or loaded (a resumed SAC run starts with an empty buffer)."""
    from stable_baselines3 import PPO, SAC

    from vlagym.agents.safe_load import load_sb3

    torch.set_num_threads(1)
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    bc_policy = vl_config = None
    if cfg.init_from:
        bc_policy = _adopt_bc(cfg)
    if cfg.vl_model:
        vl_config = _adopt_vl(cfg)
    _check_resume(run, cfg)
    atomic_write_text(run / "rl_config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
    env_kwargs = {k: v for k, v in cfg.env_kwargs.items() if k != "reward_type"}
    atomic_write_text(run / "env_args.json", json.dumps(make_env_args(cfg.env, env_kwargs), indent=2))
    t0 = time.time()
    venv = make_vec_env(cfg)
    try:
        ckpt = latest_checkpoint(run)
        if ckpt is not None:
            algo = PPO if cfg.algo == "ppo" else SAC
            model = load_sb3(ckpt[0], algo, env=venv, device=cfg.device, trust_pickle=trust_pickle,
                             tensorboard_log=str(run / "tb"))
            logger.info("resuming %s from %s (%d steps)", run, ckpt[0].name, ckpt[1])
            prior = read_curve(run)
            t0 -= float(prior[-1]["wall_s"]) if prior else 0.0
        else:
            model = build_model(cfg, venv, bc_policy, vl_config)
        trained = model.num_timesteps < cfg.timesteps
        if trained:
            model.learn(cfg.timesteps - model.num_timesteps, callback=_sb3_callbacks(cfg, run, t0),
                        reset_num_timesteps=model.num_timesteps == 0, tb_log_name="run")
            model.save(str(run / "checkpoints" / f"rl_model_{model.num_timesteps}_steps.zip"))
        if trained or not (run / "model.zip").exists():
            tmp = run / "model.tmp.zip"
            model.save(str(tmp))
            os.replace(tmp, run / "model.zip")
    finally:
        venv.close()
    summary: dict[str, Any] = {"run": str(run), "model": str(run / "model.zip"), "curve": read_curve(run),
                               "train_wall_s": round(time.time() - t0, 1)}
    if summary["curve"]:
        summary["curve_png"] = str(plot_curve(run, title=f"{cfg.algo.upper()} on {cfg.env.split('/')[-1]}"))
    if cfg.test_episodes:
        from vlagym.experiments.evaluate import evaluate

        report = evaluate(str(run), [cfg.env], cfg.test_episodes, workers=cfg.workers, expert=False,
                          out=str(run / "eval"), video_dir=str(run / "eval" / "videos") if cfg.videos else None,
                          videos_per_env=cfg.videos, on_change="restart")
        summary["test"] = report["agents"]["policy"]["overall"]
        summary["report"] = report.get("paths", {}).get("report_json")
    return summary
