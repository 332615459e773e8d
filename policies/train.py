"""Behavior-cloning training for any vlagym policy (``vlagym train``).

AdamW with linear warm-up and cosine decay, gradient clipping, mixed precision on GPU,
periodic evaluation in simulation on validation seeds with best-checkpoint selection,
TensorBoard logs and atomic checkpoints. ``resume=True`` continues a killed run from its
last checkpoint and gives bit-identical weights to an uninterrupted run of the same config on the
same device: data order and augmentation are functions of (seed, step) (so DataLoader workers hold no
state that matters), the torch, numpy and Python RNG states and the optimizer state are checkpointed,
the DataLoader draws its worker seeds from its own generator (not the global one), and evaluation in
simulation runs with the RNG states saved and restored around it. The learning-rate schedule is a
function of (step, config). A resume refuses a config that differs except in ``RESUME_FREE_FIELDS``.

Distributed data parallel: launched by ``torchrun --nproc-per-node N -m vlagym.policies.train ...`` (or
``vlagym train --nproc N``), every process trains on its ``1/N`` share of each step's batch (``StepSampler``'s
``rank``/``world``: the global batch is the one-process run's), gradients are averaged by PyTorch's
``DistributedDataParallel`` (gloo on CPU, NCCL on GPU), and rank 0 alone writes the run folder: config,
logs, checkpoints (with every rank's RNG states, so a resume continues each), validation and ``best``.
BatchNorm statistics are per process, as DDP keeps them, so N processes match one within a tolerance.

With ``teacher`` set the run distills that policy into the one it trains (``vlagym.policies.distill``).

``checkpoint/train_state.pt`` holds only tensors, numbers, strings and containers of them and loads
with ``torch.load(weights_only=True)``; a file that needs more is refused unless ``trust_pickle``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from vlagym.core.config import apply_overrides, read_yaml
from vlagym.core.env_args import ENV_ARGS_NAME
from vlagym.core.io import atomic_write_text
from vlagym.core.resume import differing_keys
from vlagym.core.safe_load import torch_load_weights
from vlagym.core.schedules import warmup_cosine
from vlagym.core.splits import VAL_SEED_START
from vlagym.dataio.dataset import env_args as dataset_env_args
from vlagym.dataio.windows import ACTION_KEYS, DemoWindows
from vlagym.policies.registry import policy_class

log = logging.getLogger(__name__)
OVERRIDE_PREFIXES = {"policy": "policy_overrides"}
"""``policy.horizon=5`` on the command line sets ``policy_overrides["horizon"]``."""
RESUME_FREE_FIELDS = ("out", "threads", "num_workers", "log_every", "save_every", "device", "preload")
THROUGHPUT_SKIP = 5  # first steps of a run left out of its samples/s (worker start-up)
PRELOAD_LIMIT = 4 * 2**30  # bytes of decoded frames that ``preload=None`` keeps in memory
"""Config fields a resume may change: they set speed, logging or checkpoint frequency, not the weights
(``device``: a resume on another device continues, but CPU and CUDA round differently)."""


@dataclass
class TrainConfig:
    """A behavior-cloning run. Every field can be set in YAML and overridden as ``key=value``."""

    data: list[str] = field(default_factory=list)
    """Dataset folders (from ``vlagym collect``)."""
    policy: str = "bcz"
    """Policy name: rt1, bcz or clip."""
    policy_overrides: dict[str, Any] = field(default_factory=dict)
    """Fields of the policy's config dataclass to override."""
    out: str = "runs/train"
    """Run folder: checkpoints, TensorBoard logs, resolved config."""
    steps: int = 2000
    """Optimizer steps."""
    batch_size: int = 32
    """Samples per step."""
    lr: float = 3e-4
    """Peak learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    warmup_steps: int = 100
    """Linear warm-up steps before cosine decay to zero."""
    grad_clip: float = 1.0
    """Max gradient norm (0 disables clipping)."""
    augment: bool = True
    """Random shift and colour jitter on training images."""
    max_demos: int | None = None
    """Use only the first N demos of the data (data-efficiency studies)."""
    labels: str = "actions"
    """Action labels: ``actions`` (executed, collection noise included) or ``expert_actions`` (the
    expert's noiseless plan at each visited state, DART-style; datasets collected with noise record it)."""
    num_workers: int = 2
    """DataLoader worker processes."""
    preload: bool | None = None
    """Decode every training frame into memory before the first step (None: when they take at most 4 GiB),
    so the loader augments instead of inflating gzip chunks; the samples are the same either way."""
    seed: int = 0
    """Seeds weights, data order and augmentation."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""
    threads: int = 0
    """CPU threads for torch (0: half the cores, at least 1). On a small shared machine more threads
    than free cores makes OpenMP spin: one busy neighbour process slows training tenfold."""
    amp: bool = True
    """bfloat16 autocast on GPU (ignored on CPU)."""
    log_every: int = 25
    """Steps between TensorBoard scalars."""
    save_every: int = 250
    """Steps between resumable checkpoints."""
    eval_every: int = 500
    """Steps between evaluations in simulation (0 disables)."""
    eval_episodes: int = 10
    """Episodes per evaluation, on validation seeds."""
    eval_env: str | None = None
    """Env id for evaluation (default: the dataset's)."""
    init_from: str | None = None
    """Start from this saved policy's weights (a policy folder, or a run folder: its best) instead of
    fresh ones; its architecture and normalisation stats are kept and ``policy_overrides`` are unused.
    DAgger retrains each round from the previous round's weights this way."""
    teacher: str | None = None
    """Distill from this saved policy (a policy folder, or a run folder: its best): the student's targets are
    the teacher's actions on the same windows (RT-1 into RT-1: its bin distributions), see
    ``vlagym.policies.distill``. None: the dataset's labels (plain BC)."""
    distill_weight: float = 1.0
    """With ``teacher``: the teacher term's share of the loss; the dataset's labels get the rest (1.0: the
    teacher alone)."""
    distill_temperature: float = 2.0
    """With ``teacher``, where teacher and student are RT-1s with the same bins: the softmax temperature T of
    the bin KL (scaled by T^2)."""

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            self.data = [self.data]
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0 (0 disables validation), got {self.eval_every!r}")
        if self.eval_every and self.eval_episodes < 1:
            raise ValueError(f"eval_episodes must be >= 1 when eval_every > 0, got {self.eval_episodes!r}")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"distill_weight must lie in [0, 1] (1: the teacher's actions only), got "
                             f"{self.distill_weight!r}")
        if self.distill_temperature <= 0:
            raise ValueError(f"distill_temperature must be > 0, got {self.distill_temperature!r}")
        if self.labels not in ACTION_KEYS:
            raise ValueError(f"labels must be one of {ACTION_KEYS}, got {self.labels!r}")
        policy_class(self.policy)  # an unknown name fails here, naming the registered ones, before any data loads


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML config and apply ``key=value`` overrides, the rule every command follows
    (``vlagym.core.config``); ``policy.<field>=value`` sets a policy config field."""
    raw = read_yaml(path, TrainConfig) if path is not None else {}
    return TrainConfig(**apply_overrides(raw, overrides, TrainConfig, prefixes=OVERRIDE_PREFIXES))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is available")
    return torch.device(name)


class StepSampler(Sampler):
    """Yields, for each step from ``start``, a batch of ``(index, augmentation seed)`` pairs drawn
    from (seed, step) alone, so a resumed run sees exactly the batches it would have seen.

    The distributed sampler too: with ``world`` processes, process ``rank`` gets the ``rank``-th of ``world``
    equal slices of each step's ``batch_size`` pairs, so together they see the one-process run's batches."""

    def __init__(self, n: int, batch_size: int, steps: int, seed: int, start: int = 0, rank: int = 0,
                 world: int = 1) -> None:
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} does not split over {world} processes: the global batch "
                             f"must be a multiple of the process count")
        self.n, self.batch_size, self.steps, self.seed, self.start = n, batch_size, steps, seed, start
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self):
        for step in range(self.start, self.steps):
            rng = np.random.default_rng([self.seed, step])
            idx = rng.integers(0, self.n, self.batch_size)
            aug = rng.integers(0, 2**31, self.batch_size)
            share = slice(self.rank * self.batch_size // self.world, (self.rank + 1) * self.batch_size // self.world)
            yield [(int(i), int(a)) for i, a in zip(idx[share], aug[share])]


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        out[key] = vals if isinstance(vals[0], str) else torch.stack(vals)
    return out


def lr_at(step: int, cfg: TrainConfig) -> float:
    return warmup_cosine(step, cfg.lr, cfg.warmup_steps, cfg.steps)


def _atomic_dir(tmp: Path, final: Path) -> None:
    """Replace directory ``final`` with ``tmp`` so that a crash leaves one of them whole."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)




def save_policy(policy, directory: Path, env_args: dict[str, Any]) -> None:
    """The policy's weights and config, plus the env arguments of its training data, so that
    evaluation makes the same env (image size, action mode) with no extra flags."""
    policy.save_pretrained(directory)
    (directory / ENV_ARGS_NAME).write_text(json.dumps(env_args, indent=2))


def rng_states() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy-global and Python ``random`` states, as tensors, numbers and lists only."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": version, "state": list(state), "gauss_next": gauss_next}}


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def save_checkpoint(run: Path, policy, optimizer, step: int, best: dict[str, Any], env_args: dict[str, Any],
                    rank_rngs: list[dict[str, Any]] | None = None) -> None:
    """``rank_rngs``: in a distributed run, every process's RNG states (``rng`` is rank 0's)."""
    tmp = run / ".checkpoint.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_policy(policy, tmp / "policy", env_args)
    state = {"optimizer": optimizer.state_dict(), "step": step, "best": best, "rng": rng_states()}
    if rank_rngs is not None:
        state["rank_rngs"] = rank_rngs
    torch.save(state, tmp / "train_state.pt")
    _atomic_dir(tmp, run / "checkpoint")


def load_train_state(path: Path, trust_pickle: bool | None = None) -> dict[str, Any]:
    """``train_state.pt`` without unpickling (``weights_only=True``); see ``safe_load.torch_load_weights``."""
    state = torch_load_weights(path, trust_pickle=trust_pickle)
    missing = {"optimizer", "step", "best"} - set(state)
    if missing:
        raise ValueError(f"{path} lacks {sorted(missing)}; is it a vlagym train checkpoint?")
    return state


def _yaml_plain(value: Any) -> Any:
    return yaml.safe_load(yaml.safe_dump(value))


def check_resume_config(run: Path, cfg: TrainConfig) -> None:
    """Refuse to resume ``run`` with a config that differs from the one it started with (its config.yaml),
    outside ``RESUME_FREE_FIELDS``; names every differing field with both values."""
    path = run / "config.yaml"
    if not path.exists():
        return
    old = yaml.safe_load(path.read_text()) or {}
    new = _yaml_plain(dataclasses.asdict(cfg))
    # Only the fields this version knows: one an older run recorded and this version dropped is no reason to refuse;
    # one added since (the distillation fields), absent from the run's file, had its default's behaviour there.
    defaults = _yaml_plain(dataclasses.asdict(TrainConfig(policy=cfg.policy)))
    diff = differing_keys({k: old.get(k, defaults[k]) for k in new}, new, free=RESUME_FREE_FIELDS)
    if diff:
        shown = "; ".join(f"{k}: {old.get(k)!r} in the run, {new[k]!r} now" for k in diff)
        raise ValueError(f"cannot resume {run} with a different config ({shown}). A resumed run must match "
                         f"{path} except in {', '.join(RESUME_FREE_FIELDS)}; pass the original settings or "
                         "choose another out=")


class _IsolatedRNG:
    """Saves the torch, numpy and Python RNG states and restores them on exit: evaluation in simulation then
    leaves the training's random streams where they were."""

    def __enter__(self) -> None:
        self.states = rng_states()

    def __exit__(self, *exc) -> None:
        set_rng_states(self.states)


def _restore_interrupted(run: Path) -> None:
    """Finish an interrupted checkpoint swap (final moved aside, new one not yet in place)."""
    ckpt, old = run / "checkpoint", run / "checkpoint.old"
    if not ckpt.exists() and old.exists():
        os.replace(old, ckpt)


class Validator(Protocol):
    """How training measures a policy in the simulator: the success rate of the live ``policy`` on ``env_id``
    (made with ``env_kwargs``) over ``seeds``. Episodes are played by the evaluator in the agents layer, above
    this one, so the caller hands it in: ``vlagym.agents.evaluation.validation_success`` (what ``vlagym train``,
    the pipeline and the data-efficiency study pass), and validation numbers are the evaluator's numbers."""

    def __call__(self, policy, env_id: str, env_kwargs: dict[str, Any], seeds: list[int]) -> float: ...


def validation_seeds(cfg: TrainConfig) -> list[int]:
    """The validation episodes' seeds, the same at every evaluation: the first ``eval_episodes`` of the split."""
    return list(range(VAL_SEED_START, VAL_SEED_START + cfg.eval_episodes))


@dataclass
class Ranks:
    """This process's place in a distributed run (torchrun's ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``); a plain
    run is rank 0 of 1, and then every method is a no-op."""

    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Ranks:
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def mean(self, value: torch.Tensor) -> float:
        """The mean over the processes of a scalar tensor (the global batch's loss)."""
        if self.world > 1:
            value = value.detach().clone()
            torch.distributed.all_reduce(value)
            value /= self.world
        return float(value)

    def gather(self, obj: Any) -> list[Any] | None:
        """Every process's ``obj``, in rank order (None in a plain run)."""
        if self.world == 1:
            return None
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out


def _init_distributed(ranks: Ranks, device: torch.device) -> tuple[torch.device, bool]:
    """Join the process group torchrun set up (gloo on CPU, NCCL on GPU); the device this rank trains on and
    whether this call made the group (and so must destroy it)."""
    if ranks.world == 1:
        return device, False
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if torch.distributed.is_initialized():
        return device, False
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, True


class _LossModule(torch.nn.Module):
    """``policy.loss`` (or the distiller's) as a module's forward, which ``DistributedDataParallel`` wraps."""

    def __init__(self, policy, distiller=None) -> None:
        super().__init__()
        self.policy, self.distiller = policy, distiller

    def forward(self, batch):
        return self.policy.loss(batch) if self.distiller is None else self.distiller.loss(self.policy, batch)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, trust_pickle: bool | None = None,
          validate: Validator | None = None) -> dict[str, Any]:
    """Train; returns a summary with the run folder, final loss and best evaluation.

    ``validate`` plays the validation episodes every ``eval_every`` steps (``Validator``); a config that asks for
    them without one is refused before anything is written. ``trust_pickle`` lets a resume unpickle a checkpoint
    that ``weights_only=True`` refuses (after a warning).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) it trains data-parallel across the processes (see the module)."""
    ranks = Ranks.from_env()
    device, owned = _init_distributed(ranks, resolve_device(cfg.device))
    try:
        return _train(cfg, resume, progress and ranks.main, trust_pickle, validate, ranks, device)
    finally:
        if owned:
            torch.distributed.destroy_process_group()


def _train(cfg: TrainConfig, resume: bool, progress: bool, trust_pickle: bool | None, validate: Validator | None,
           ranks: Ranks, device: torch.device) -> dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.tensorboard import SummaryWriter

    from vlagym.policies import load_policy, make_policy

    if not cfg.data:
        raise ValueError("no training data: set data: [DIR, ...] in the config or data=DIR")
    if cfg.eval_every and validate is None:
        raise ValueError(f"eval_every={cfg.eval_every} asks for validation in simulation, but train() was given no "
                         "validate=: pass validate=vlagym.agents.evaluation.validation_success (as `vlagym train` "
                         "does), or set eval_every=0 to train without validation")
    run = Path(cfg.out)
    if run.exists() and (run / "config.yaml").exists() and not resume:
        raise FileExistsError(f"{run} already holds a run; pass --resume to continue it or choose another out=")
    if resume:
        check_resume_config(run, cfg)
    if cfg.batch_size % ranks.world:
        raise ValueError(f"batch_size {cfg.batch_size} does not split over {ranks.world} processes: the global batch "
                         "must be a multiple of the process count")
    ranks.barrier()  # every rank has looked at the folder before rank 0 writes to it
    run.mkdir(parents=True, exist_ok=True)
    if ranks.main:
        _restore_interrupted(run)
    ranks.barrier()
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // 2 // ranks.world))
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)  # only third-party code reads the global generators
    random.seed(cfg.seed)

    env_args = dataset_env_args(cfg.data[0])
    eval_env = cfg.eval_env or env_args["env_name"]
    probe = DemoWindows(cfg.data, max_demos=cfg.max_demos, action_key=cfg.labels)
    stats = {"actions": probe.action_stats(), "proprio": probe.proprio_stats()}
    eval_kwargs = {k: v for k, v in env_args["env_kwargs"].items() if k != "task"}  # the env id names the task
    obs_space, act_space = _spaces(eval_env, eval_kwargs)

    start = 0
    best = {"success_rate": -1.0, "step": None}
    if resume and (run / "checkpoint").exists():
        state = load_train_state(run / "checkpoint" / "train_state.pt", trust_pickle)
        policy = load_policy(run / "checkpoint" / "policy")
        start, best = state["step"], state["best"]
    elif cfg.init_from:
        policy, state = load_policy(_policy_folder(cfg.init_from)), None
    else:
        policy = make_policy(cfg.policy, obs_space, act_space, stats=stats, **_data_overrides(cfg, probe.demos))
        state = None
    policy.to(device).train()
    distiller = None
    if cfg.teacher:
        from vlagym.policies.distill import Distiller

        with _IsolatedRNG():  # building the teacher draws initial weights: the student's streams stay put
            distiller = Distiller.load(cfg.teacher, policy, device, cfg.distill_weight, cfg.distill_temperature)
    history, horizon = policy.window()
    image_keys = policy.image_keys()
    if distiller is not None:  # the windows hold what both read
        history, image_keys = distiller.history(), distiller.image_keys()
    preload = cfg.preload if cfg.preload is not None else probe.decoded_bytes(image_keys) <= PRELOAD_LIMIT
    data = DemoWindows(cfg.data, history=history, horizon=horizon, augment=cfg.augment,
                       max_demos=cfg.max_demos, image_keys=image_keys, action_key=cfg.labels,
                       label_keys=policy.label_keys(), preload=preload)
    # Written once the data is known to hold what the policy reads (a missing label key raises above), so that a
    # run refused for its data leaves no config.yaml behind to block the corrected rerun.
    if ranks.main:
        atomic_write_text(run / "config.yaml", yaml.safe_dump({**dataclasses.asdict(cfg),
                                                              "resolved_policy": policy.config_dict()},
                                                             sort_keys=False))
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if len(state.get("rank_rngs") or ()) == ranks.world:
            set_rng_states(state["rank_rngs"][ranks.rank])
        elif "rng" in state:
            set_rng_states(state["rng"])
        else:  # written before the numpy and Python states were saved
            torch.set_rng_state(state["torch_rng"])
    if start >= cfg.steps:
        log.info("run already finished at step %d", start)
        return _summary(run, best, None, write=ranks.main)

    model = _LossModule(policy, distiller)
    if ranks.world > 1:  # averages the gradients over the processes during backward
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                        find_unused_parameters=True)
    sampler = StepSampler(len(data), cfg.batch_size, cfg.steps, cfg.seed, start, ranks.rank, ranks.world)
    # Its own generator: creating the iterator draws the workers' base seed, which from the global generator
    # would shift every later torch draw (dropout) of a resumed run by one.
    workers_seed = int(np.random.SeedSequence([cfg.seed, start]).generate_state(1)[0])
    loader = DataLoader(data, batch_sampler=sampler, num_workers=cfg.num_workers, collate_fn=collate,
                        persistent_workers=False, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(workers_seed))
    writer = SummaryWriter(str(run / "tb"), purge_step=start) if ranks.main else _NoWriter()
    use_amp = cfg.amp and device.type == "cuda"
    bar = tqdm(total=cfg.steps, initial=start, desc=f"train {cfg.policy}", unit="step", dynamic_ncols=True,
               disable=not progress)
    t_last, seen, loss_value = time.perf_counter(), 0, None
    step = start
    # Throughput of the loop itself (loading, augmentation, forward, backward), after the first steps
    # (worker start-up) and without the time spent in validation and checkpoints.
    timed_from, t_timed, paused = start + THROUGHPUT_SKIP, None, 0.0
    for batch in loader:
        if step == timed_from:
            t_timed, paused = time.perf_counter(), 0.0
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step, cfg)
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss, logs = model(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower lr or check the data")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        step += 1
        seen += cfg.batch_size
        loss_value = ranks.mean(loss.detach())
        if step % cfg.log_every == 0 or step == cfg.steps:
            now = time.perf_counter()
            sps = seen / max(now - t_last, 1e-9)
            t_last, seen = now, 0
            writer.add_scalar("train/loss", loss_value, step)
            writer.add_scalar("train/lr", lr_at(step - 1, cfg), step)
            writer.add_scalar("train/samples_per_s", sps, step)
            for k, v in logs.items():
                if k != "loss":  # train/loss is the global batch's (the mean over the ranks), written above
                    writer.add_scalar(f"train/{k}", float(v), step)
            shown = {k: f"{v:.3g}" for k, v in logs.items() if k in ("bc_loss", "distill_loss") or "error" in k}
            bar.set_postfix(loss=f"{loss_value:.4f}", **shown, samples_s=f"{sps:.0f}")
        bar.update(1)
        t_pause = time.perf_counter()
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps) and ranks.main:
            with _IsolatedRNG():
                rate = validate(policy, eval_env, eval_kwargs, validation_seeds(cfg))
            policy.train()
            writer.add_scalar("eval/success_rate", rate, step)
            bar.write(f"step {step}: validation success {rate:.0%} over {cfg.eval_episodes} episodes")
            # A tie goes to the later weights: they have seen more data at a lower learning rate,
            # and 20 validation episodes cannot tell the two apart anyway.
            if rate >= best["success_rate"]:
                best = {"success_rate": rate, "step": step}
                tmp = run / ".best.tmp"
                if tmp.exists():
                    shutil.rmtree(tmp)
                save_policy(policy, tmp, env_args)
                _atomic_dir(tmp, run / "best")
        if step % cfg.save_every == 0 or step == cfg.steps:
            rank_rngs = ranks.gather(rng_states())
            if ranks.main:
                save_checkpoint(run, policy, optimizer, step, best, env_args, rank_rngs)
        paused += time.perf_counter() - t_pause
    bar.close()
    writer.close()
    if ranks.main and not (run / "best").exists():  # no evaluation ran: the last weights are the answer
        shutil.copytree(run / "checkpoint" / "policy", run / "best")
    throughput = None
    if t_timed is not None and step > timed_from:
        throughput = (step - timed_from) * cfg.batch_size / max(time.perf_counter() - t_timed - paused, 1e-9)
    summary = _summary(run, best, loss_value, throughput, write=ranks.main)
    ranks.barrier()  # the run folder is whole before any rank returns
    return summary


def _policy_folder(path: str | os.PathLike) -> Path:
    """A policy folder itself, or a training run's ``best``."""
    path = Path(path)
    return path / "best" if (path / "best" / "config.json").exists() else path


def _data_overrides(cfg: TrainConfig, demos) -> dict[str, Any]:
    """The policy overrides, with what the data fills in: the word encoder's vocabulary (the training
    instructions' words) and the grounding roles, when the config asks for them and gives none."""
    from vlagym.dataio.windows import dataset_roles

    overrides = dict(cfg.policy_overrides)
    if "words" in str(overrides.get("text_encoder", "")) and not overrides.get("vocab"):
        from vlagym.policies.language import build_vocab

        overrides["vocab"] = build_vocab(r.instruction for r in demos)
    grounded = any(overrides.get(k) for k in ("heatmap_weight", "position_weight", "yaw_weight"))
    if grounded and not overrides.get("roles"):
        roles = dataset_roles(cfg.data)
        if not roles:
            raise ValueError(f"{cfg.data[0]} has no privileged labels (no labels/<role>/... in its demos: it was "
                             "collected before labels were recorded); recollect it, or set policy.heatmap_weight, "
                             "policy.position_weight and policy.yaw_weight to 0")
        overrides["roles"] = roles
    return overrides


class _NoWriter:
    """TensorBoard's writer on the ranks that write nothing (rank 0 logs)."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def _summary(run: Path, best: dict[str, Any], loss: float | None, samples_per_s: float | None = None,
             write: bool = True) -> dict[str, Any]:
    summary = {"run": str(run), "best": best, "final_loss": loss, "best_policy": str(run / "best"),
               "samples_per_s": samples_per_s}
    if write:
        (run / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _spaces(env_id: str, env_kwargs: dict[str, Any]):
    import gymnasium as gym

    env = gym.make(env_id, **env_kwargs)
    spaces = env.observation_space, env.action_space
    env.close()
    return spaces


def main(argv: list[str] | None = None) -> int:
    """``python -m vlagym.policies.train [--config FILE.yaml] [--resume] [key=value ...]``: what ``torchrun
    --nproc-per-node N -m vlagym.policies.train ...`` launches in every process. Validation in simulation plays
    episodes through the evaluator, a layer above this one, so this entry point trains with ``eval_every=0``
    only; ``torchrun ... -m vlagym.experiments.cli train`` (or ``vlagym train --nproc N``) validates too."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m vlagym.policies.train", description=main.__doc__)
    parser.add_argument("--config", help="YAML config (experiments/configs/*.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue the run in out= from its last checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. steps=500")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if cfg.eval_every:
        raise SystemExit(f"python -m vlagym.policies.train: eval_every={cfg.eval_every} needs the evaluator: pass "
                         "eval_every=0, or launch `-m vlagym.experiments.cli train` (vlagym train) instead")
    summary = train(cfg, resume=args.resume)
    if Ranks.from_env().main:
        print(f"final policy: {summary['best_policy']}; run folder {summary['run']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
