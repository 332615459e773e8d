"""Where episodes run: the executor beneath ``run_jobs`` and collection (``--executor local|ray``).

* ``local``: a ``ProcessPoolExecutor`` on this machine (what every command used before Ray existed).
* ``ray``: a pool of Ray actors on a Ray cluster (``--address``, or a fresh single-node cluster when none is
  given). Each actor is one long-lived worker process holding one env (one PyBullet client) per env
  configuration, exactly as a local worker does, and runs the same job functions.

Both are ``concurrent.futures.Executor``s, so the callers (``run_jobs``, ``collect``) submit and wait the same
way, and since every episode is a function of its spec (env id, kwargs, seed, agent) the two write the same
datasets and reports. Ray's own fault tolerance covers a killed actor: it is restarted and its unfinished
calls rerun (``max_restarts``/``max_task_retries``); results are keyed by job, so an episode that reran is
counted once. Past the retries a call fails with ``WorkerCrash``, as a local pool does.

Ray is imported only when ``executor="ray"``: a local run never needs it.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

EXECUTORS = ("local", "ray")


class WorkerCrash(RuntimeError):
    """Worker processes kept dying (killed, out of memory, a crash in native code) past the retries."""


@dataclass(frozen=True)
class Backend:
    """An executor kind and, for Ray, the cluster to join."""

    executor: str = "local"
    """local (a process pool here) or ray (actors on a Ray cluster)."""
    address: str | None = None
    """ray: the cluster's address (``HOST:PORT`` of its head, ``ray://HOST:10001`` for Ray Client, or ``auto``);
    None joins ``RAY_ADDRESS`` or the cluster ``ray start`` began on this machine, else starts a single-node one
    for this process."""

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {self.executor!r}")
        if self.address is not None and self.executor != "ray":
            raise ValueError(f"--address {self.address} names a Ray cluster; it needs --executor ray")

    def check(self) -> None:
        """Refuse now, before any work, an address where no Ray cluster listens (``ValueError``)."""
        if self.executor == "ray" and self.address not in (None, "auto", "local"):
            _check_reachable(self.address)

    def pool(self, workers: int, retries: int = 2) -> Executor:
        """An executor with ``workers`` parallel workers (``retries``: Ray restarts of a killed actor)."""
        if self.executor == "local":
            return ProcessPoolExecutor(max_workers=workers)
        return RayPool(workers, self.address, retries)


LOCAL = Backend()


def backend(executor: str | Backend | None = None, address: str | None = None) -> Backend:
    """``Backend(executor, address)``; a ``Backend`` passes through, None is local."""
    if isinstance(executor, Backend):
        return executor
    return Backend(executor or "local", address)


def connect(address: str | None = None):
    """Import Ray and join (or start) the cluster; returns the ``ray`` module. Already connected: as it is.

    ``ray.init`` waits minutes on an address where nothing listens, so a ``HOST:PORT`` is tried first and refused
    at once with the address in the message."""
    try:
        import ray
    except ImportError as e:
        raise ValueError("--executor ray needs Ray, which is not installed: pip install 'vlagym[ray]' "
                         "(or 'ray>=2.50')") from e
    if address not in (None, "auto", "local"):
        _check_reachable(address)
    if ray.is_initialized():
        return ray
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except ConnectionError as e:
        raise ValueError(f"no Ray cluster at --address {address}: {e}") from e
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379, or ray://HOST:10001 for "
                         "Ray Client, or auto)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ValueError(f"no Ray cluster at --address {address}: {e.strerror or e} (start one with "
                         f"`ray start --head --port {port}` on {host}, or leave --address out to start a "
                         "single-node cluster here)") from None


class _Worker:
    """A Ray actor: one worker process that runs job functions (module-level, so sent by reference) and keeps
    their per-process caches (envs, loaded policies) between calls, like a local pool's worker."""

    def __init__(self, env_vars: dict[str, str]) -> None:
        os.environ.update(env_vars)
        import vlagym  # noqa: F401  (registers the env ids)

    def call(self, fn, args: tuple, kwargs: dict[str, Any]):
        return fn(*args, **kwargs)


FORWARDED_ENV = ("VLAGYM_FAULT_EXIT_ONCE",)
"""Variables of this process that the actors see too (fault injection in tests, as forked workers inherit it)."""


class RayPool(Executor):
    """``workers`` Ray actors behind the ``Executor`` interface; a call goes to the actor with the fewest
    unfinished calls (the callers keep only a few per worker in flight, so a long episode delays little)."""

    def __init__(self, workers: int, address: str | None = None, retries: int = 2) -> None:
        self._ray = ray = connect(address)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if 0 < cpus < workers:  # an actor that finds no CPU never starts, and the episodes sent to it would wait
            print(f"ray: {workers} workers asked for, the cluster has {cpus} CPUs: running {cpus}", file=sys.stderr)
            workers = cpus
        env_vars = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        actor = ray.remote(num_cpus=1, max_restarts=retries, max_task_retries=retries)(_Worker)
        self._actors = [actor.remote(env_vars) for _ in range(workers)]
        self._load = [0] * workers
        self._lock = threading.Lock()
        self._retries = retries

    def submit(self, fn, /, *args, **kwargs) -> Future:
        with self._lock:
            i = min(range(len(self._actors)), key=self._load.__getitem__)
            self._load[i] += 1
        out: Future = Future()
        ray_future = self._actors[i].call.remote(fn, args, kwargs).future()

        def finished(f: Future, i: int = i) -> None:
            with self._lock:
                self._load[i] -= 1
            try:
                out.set_result(f.result())
            except self._ray.exceptions.RayActorError as e:
                out.set_exception(WorkerCrash(
                    f"a Ray worker died past its {self._retries} restarts (killed, out of memory or a crash in "
                    f"native code): {str(e).splitlines()[0]}"))
            except BaseException as e:  # noqa: BLE001  (the job's own error: Ray raises it as an instance of its class)
                out.set_exception(e)

        ray_future.add_done_callback(finished)
        return out

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        for a in self._actors:
            self._ray.kill(a)
        self._actors = []
