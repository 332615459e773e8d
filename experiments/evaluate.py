"""Policy evaluation against the expert on the same held-out seeds (``vlagym eval``).

Before any episode runs, ``evaluate`` checks what a user can get wrong: the seeds' split, the env kwargs
(names the env takes, values it accepts), whether the policy can run on each env at all (its training
env's observation keys and action space), and that ``out`` is writable. With ``out``, every finished
episode is appended to ``out/episodes.jsonl`` (flushed and fsynced) as it comes back from its worker; a
rerun with the same settings resumes from it and a rerun with other settings is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from gymnasium import spaces

from vlagym.agents.backends import Backend
from vlagym.agents.evaluation import Cell, evaluate_cells
from vlagym.agents.latency import check_latency
from vlagym.agents.policy_agent import policy_env_args, resolve_policy_dir
from vlagym.agents.rollout import Episode, video_kwargs
from vlagym.agents.video import grid, write_video
from vlagym.core.io import atomic_write_text
from vlagym.core.splits import SPLIT_SEED_START, SPLIT_SIZE, split_of
from vlagym.envs import check_env_kwargs, env_constructor_args
from vlagym.experiments.report import build_report, write_report

EPISODE_LOG = "episodes.jsonl"
ONNX_CACHE = "onnx"
"""Folder in ``out`` where ``--backend onnxruntime`` keeps the policy's ONNX export."""
BACKENDS = ("torch", "onnxruntime")


def evaluate(
    policy: str | None,
    env_ids: list[str],
    episodes: int,
    seed_start: int = SPLIT_SEED_START["test"],
    workers: int | None = None,
    video_dir: str | None = None,
    videos_per_env: int = 4,
    expert: bool = True,
    out: str | None = None,
    gif: bool = False,
    env_kwargs: dict[str, Any] | None = None,
    split: str = "test",
    on_change: str = "refuse",
    backend: str = "torch",
    latency: float | str | None = None,
    executor: str = "local",
    address: str | None = None,
) -> dict[str, Any]:
    """Run ``policy`` (a checkpoint or run folder) and the expert on ``episodes`` seeds per env.

    Args:
        env_kwargs: env keyword arguments on top of those the policy was trained with (its
            env_args.json); one that changes what the policy sees or does (a different image size,
            another action mode) is refused.
        split: the split all seeds must lie in: ``"test"``, or ``"val"`` for validation. Training seeds
            are always refused: a policy evaluated there measures memory, not skill.
        out: folder for report.json, report.md and the episode log that makes a rerun resume.
        on_change: what a rerun into ``out`` with other settings does: ``"refuse"`` (``vlagym eval``) or
            ``"restart"`` (pipelines that retrain into the same folder and evaluate again).
        backend: what runs the policy's per-step network: ``"torch"``, or ``"onnxruntime"`` (a float policy is
            exported to ONNX once, into ``out/onnx/`` or a temporary folder; an ONNX-compressed one runs as is).
        latency: milliseconds each of the policy's decisions takes, or ``"measured"`` (``LatencyAgent``: the
            env executes the previous action meanwhile); None or 0 acts at once. The expert acts at once.
        executor, address: where the workers run (``vlagym.agents.backends``): ``"local"`` processes, or ``"ray"``
            actors on the cluster at ``address`` (none: a single-node cluster here). The report is the same.
    """
    pool = Backend(executor, address)
    pool.check()
    check_seeds(seed_start, episodes, split)
    latency = check_latency(latency)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not env_ids:
        raise ValueError("evaluate needs at least one env id")
    for folder in (out, video_dir):
        if folder is not None:
            check_writable(folder)
    t0 = time.time()
    seeds = {e: list(range(seed_start, seed_start + episodes)) for e in env_ids}
    agents: dict[str, str] = {}
    if policy is not None:
        agents["policy"] = str(resolve_policy_dir(policy))
        if Path(agents["policy"]).is_dir():  # a bad config.json or truncated weights: now, not in a worker
            from vlagym.policies.factory import check_pretrained

            check_pretrained(agents["policy"])
    if expert:
        agents["expert"] = "expert"
    if not agents:
        raise ValueError("nothing to evaluate: no policy and no expert")
    # The env as the policy saw it in training (image size, action mode), with the user's kwargs on top;
    # the expert gets the same.
    kwargs_of = {e: eval_env_kwargs(policy, e, env_kwargs or {}) for e in env_ids}
    log = None
    if out:
        settings = {"agents": {n: _digest(p) if n == "policy" else p for n, p in agents.items()},
                    "env_ids": env_ids, "episodes": episodes, "seed_start": seed_start, "env_kwargs": kwargs_of}
        # Only when set, so the log of an evaluation from before these settings still resumes.
        settings.update({k: v for k, v in (("backend", backend), ("latency", latency))
                         if v is not None and v != "torch"})
        log = EpisodeLog(Path(out) / EPISODE_LOG, settings, on_change=on_change)
    runs = dict(agents)  # what plays each row: with onnxruntime, the policy's ONNX folder
    scratch = None  # the ONNX export's folder when there is no out to keep it in
    if backend == "onnxruntime" and "policy" in agents:
        scratch = None if out else tempfile.mkdtemp(prefix="vlagym-onnx-")
        try:
            runs["policy"] = onnx_policy(agents["policy"], Path(out or scratch) / ONNX_CACHE)
        except BaseException:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
            raise
    recording = video_dir is not None
    cells = [Cell(path, e, seeds[e], {**kwargs_of[e], **(video_kwargs(e) if recording else {})},
                  record=videos_per_env if recording else 0, latency=latency if name == "policy" else None)
             for name, path in runs.items() for e in env_ids]
    name_of = {path: name for name, path in runs.items()}
    # Recorded episodes always rerun: the log keeps no frames.
    done = {(c, i): ep for c, cell in enumerate(cells) for i, seed in enumerate(cell.seeds)
            if log and i >= cell.record and (ep := log.get(name_of[cell.agent], cell, seed)) is not None}
    if done:
        total = sum(len(cell.seeds) for cell in cells)
        print(f"eval: resuming from {log.path}: {len(done)} of {total} episodes already finished")

    def on_result(c: int, i: int, ep: Episode) -> None:  # in this process, as each episode comes back
        log.append(name_of[cells[c].agent], cells[c], cells[c].seeds[i], ep)

    try:
        evaluations = evaluate_cells(cells, workers=workers, desc="eval", done=done,
                                     on_result=on_result if log else None, backend=pool)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    rows: dict[str, list[Episode]] = {name: [] for name in agents}
    for ev in evaluations:
        rows[name_of[ev.cell.agent]] += ev.episodes
    videos = _write_videos(rows, video_dir, gif) if video_dir else []
    # An ONNX-compressed --policy runs in ONNX Runtime whatever the backend asked.
    onnx = backend == "onnxruntime" or ("policy" in agents and _is_onnx(agents["policy"]))
    backend_info = {"backend": "onnxruntime" if onnx else "torch", "latency_ms": latency or 0}
    if runs.get("policy") != agents.get("policy") and scratch is None:
        backend_info["backend_policy"] = runs["policy"]  # the ONNX export evaluated
    report = build_report(rows, seeds, job="eval", policy=agents.get("policy"), **backend_info,
                          env_kwargs=_report_kwargs(kwargs_of), split=split, videos=videos,
                          wall_time_s=round(time.time() - t0, 1))
    if out:
        json_path, md_path = write_report(report, out)
        report["paths"] = {"report_json": str(json_path), "report_md": str(md_path), "episodes": str(log.path)}
    return report


def onnx_policy(policy_dir: str | os.PathLike, cache: Path) -> str:
    """The folder that runs ``policy_dir`` through ONNX Runtime: the folder itself when it is ONNX-compressed
    already (``compression.json`` method onnx or onnx-int8), else its float export (``compress_policy(...,
    "onnx")``) in ``cache/<hash of its files>``, made once and reused while the policy's files stay the same."""
    from vlagym.policies.compress.api import compress_policy
    from vlagym.policies.compress.record import COMPRESSION_NAME

    path = Path(policy_dir)
    if not path.is_dir():
        raise ValueError(f"--backend onnxruntime runs vlagym policy folders; {path} is a stable-baselines3 model "
                         "(evaluate it with --backend torch)")
    if _is_onnx(path):
        return str(path)
    target = cache / _digest(str(path))["sha256"][:16]
    if not (target / COMPRESSION_NAME).exists():
        print(f"eval: exporting {path} to ONNX in {target}")
        partial = target.with_name(target.name + ".partial")  # a killed export leaves nothing that looks done
        shutil.rmtree(partial, ignore_errors=True)
        compress_policy(path, "onnx", partial)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return str(target)


def _is_onnx(policy_dir: str | os.PathLike) -> bool:
    """An ONNX-compressed policy folder (``compression.json`` method onnx or onnx-int8)."""
    path = Path(policy_dir)
    if not (path / "compression.json").is_file():
        return False
    from vlagym.policies.compress.api import ONNX_METHODS
    from vlagym.policies.compress.record import read_record

    return read_record(path)["method"] in ONNX_METHODS


def check_seeds(seed_start: int, episodes: int, split: str = "test") -> None:
    """Refuse an empty range, and seeds outside ``split`` (``"test"`` or ``"val"``)."""
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    last = seed_start + episodes - 1
    first_split, last_split = split_of(seed_start), split_of(last)
    if "train" in (first_split, last_split):
        raise ValueError(f"seeds {seed_start}..{last} overlap the training split [0, {SPLIT_SEED_START['val']}); "
                         f"evaluate on test seeds (from {SPLIT_SEED_START['test']})")
    if first_split != split or last_split != split:
        hint = "" if split == "val" else " (validation seeds need --split val)"
        start = SPLIT_SEED_START[split]
        raise ValueError(f"seeds {seed_start}..{last} are not all in the {split} split [{start}, {start + SPLIT_SIZE})"
                         f"{hint}")


def check_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` and write and delete a probe file in it, so a read-only or full disk shows up
    before an evaluation rather than after it."""
    path = Path(folder)
    probe = path / f".write-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        raise OSError(e.errno, f"output folder {path} is not writable: {e.strerror or e}") from e
    return path


def eval_env_kwargs(policy: str | None, env_id: str, user: dict[str, Any]) -> dict[str, Any]:
    """The env kwargs to evaluate ``policy`` on ``env_id``: its training kwargs, then ``user``'s. Refuses
    unknown or invalid kwargs, an env whose observations or actions differ from the policy's training
    env, and user kwargs that change them."""
    train_env, trained, source = policy_env_args(policy) if policy is not None else (None, {}, None)
    if trained and train_env and train_env != env_id:
        foreign = sorted(set(trained) - set(env_constructor_args(env_id)))
        if foreign:
            raise ValueError(f"policy {policy} was trained on {train_env} and cannot run on {env_id}: it needs "
                             f"{', '.join(f'{k}={trained[k]!r}' for k in foreign)}, which {env_id} does not have "
                             f"(observation keys and action space differ)")
    merged = {**trained, **user}
    obs_space, act_space = check_env_kwargs(env_id, merged)
    if not trained or not train_env:
        return merged
    want_obs, want_act = check_env_kwargs(train_env, trained)
    why = _space_difference(want_obs, want_act, obs_space, act_space)
    if why is None:
        return merged
    changed = {k: v for k, v in user.items() if k in trained and trained[k] != v}
    if train_env == env_id or changed:
        said = ", ".join(f"{k}={v!r}" for k, v in changed.items()) or ", ".join(f"{k}={v!r}" for k, v in user.items())
        raise ValueError(f"env kwargs {said} contradict what policy {policy} was trained with ("
                         f"{', '.join(f'{k}={trained[k]!r}' for k in changed) or 'its defaults'}, in {source}): {why}")
    raise ValueError(f"policy {policy} was trained on {train_env} and cannot run on {env_id}: {why}")


def _space_difference(want_obs: spaces.Dict, want_act: spaces.Space, obs: spaces.Dict,
                      act: spaces.Space) -> str | None:
    """What differs between the policy's training spaces and an env's, in words; None if nothing does."""
    def shapes(space: spaces.Dict) -> dict[str, tuple]:
        return {k: s.shape for k, s in space.spaces.items() if k != "instruction"}

    a, b = shapes(want_obs), shapes(obs)
    if a != b:
        return f"observation keys and shapes {a} in training, {b} here"
    if type(want_act) is not type(act) or want_act.shape != act.shape or \
            (isinstance(act, spaces.Discrete) and act.n != want_act.n):
        return f"action space {want_act} in training, {act} here"
    return None


def _report_kwargs(kwargs_of: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One kwargs dict when every env got the same ones (the usual case), else one per env id."""
    values = list(kwargs_of.values())
    return values[0] if all(v == values[0] for v in values) else kwargs_of


def _digest(path: str) -> dict[str, str]:
    """The policy's path and a hash of its files: a retrained checkpoint in the same folder is another policy."""
    p, h = Path(path), hashlib.sha256()
    for f in sorted(p.iterdir()) if p.is_dir() else [p]:
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return {"path": str(p.resolve()), "sha256": h.hexdigest()}


class EpisodeLog:
    """Append-only JSONL of finished episodes: a header line with the evaluation's settings, then one line
    per episode keyed by (agent, env id, seed, env kwargs). A line cut short by a crash is ignored."""

    def __init__(self, path: Path, settings: dict[str, Any], on_change: str = "refuse") -> None:
        if on_change not in ("refuse", "restart"):
            raise ValueError(f"on_change must be 'refuse' or 'restart', got {on_change!r}")
        self.path = path
        self.settings = json.loads(json.dumps(settings))  # as it reads back
        self.episodes: dict[str, Episode] = {}
        if path.exists() and path.stat().st_size:
            lines = path.read_text().splitlines()
            try:
                old = json.loads(lines[0])["settings"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}: not an evaluation episode log (first line: {lines[0][:80]!r}); "
                                 "delete it or use another --out") from e
            if old != self.settings:
                if on_change == "refuse":
                    diff = sorted(k for k in set(old) | set(self.settings) if old.get(k) != self.settings.get(k))
                    raise ValueError(f"{path} holds episodes of an evaluation with other settings (differing: "
                                     f"{', '.join(diff)}); rerun with the same settings to resume, or use another "
                                     "--out (or delete the file) to start afresh")
                path.unlink()
            else:
                for n, line in enumerate(lines[1:], 2):
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        if n < len(lines):
                            raise ValueError(f"{path}:{n}: not valid JSON") from None
                        # The last line, cut short when the process died mid-write: drop it.
                        atomic_write_text(path, "".join(f"{x}\n" for x in lines[:-1]))
                        continue
                    self.episodes[row["key"]] = Episode(**row["episode"])
        if not path.exists() or not path.stat().st_size:
            self._write({"settings": self.settings})

    @staticmethod
    def key(agent: str, cell: Cell, seed: int) -> str:
        return json.dumps([agent, cell.env_id, seed, [[k, v] for k, v in sorted(cell.env_kwargs.items())]])

    def get(self, agent: str, cell: Cell, seed: int) -> Episode | None:
        return self.episodes.get(self.key(agent, cell, seed))

    def append(self, agent: str, cell: Cell, seed: int, episode: Episode) -> None:
        self._write({"key": self.key(agent, cell, seed), "episode": episode.summary()})

    def _write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _write_videos(rows: dict[str, list[Episode]], video_dir: str, gif: bool) -> list[str]:
    out, paths = Path(video_dir), []
    suffix = "gif" if gif else "mp4"
    for agent, episodes in rows.items():
        by_env: dict[str, list[Episode]] = {}
        for ep in episodes:
            if ep.frames:
                by_env.setdefault(ep.env_id, []).append(ep)
        for env_id, eps in by_env.items():
            name = env_id.split("/")[-1]
            for ep in eps:
                paths.append(str(write_video(out / f"{agent}_{name}_seed{ep.seed}.{suffix}", ep.frames)))
            paths.append(str(write_video(out / f"{agent}_{name}_grid.mp4", grid([e.frames for e in eps]))))
    return paths
