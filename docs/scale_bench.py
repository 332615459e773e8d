"""1-to-2 worker scaling of `vlagym collect`, local process pool against Ray actors (docs/cluster.md).

python docs/scale_bench.py EXECUTOR WORKERS OUT [EPISODES]: one collection in this process; prints one JSON
line with the wall time of the collection alone (the Ray cluster is started before the clock), the CPU seconds
of this process, of its reaped children (local workers) and of the Ray actors (asked before they are killed)."""

import json
import resource
import sys
import time

from vlagym.agents import backends
from vlagym.agents.collect import CollectConfig, collect

executor, workers, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
EPISODES = int(sys.argv[4]) if len(sys.argv) > 4 else 60


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


actor_cpu = []
if executor == "ray":
    t = time.perf_counter()
    ray = backends.connect(None)
    startup = time.perf_counter() - t
    shutdown = backends.RayPool.shutdown

    def measured_shutdown(self, wait=True, *, cancel_futures=False):
        actor_cpu.extend(ray.get([a.call.remote(_cpu, (), {}) for a in self._actors]))
        shutdown(self, wait, cancel_futures=cancel_futures)

    backends.RayPool.shutdown = measured_shutdown
else:
    startup = 0.0
c0 = _cpu()
t0 = time.perf_counter()
m = collect(CollectConfig(env="vlagym/TabletopPickUp-v0", episodes=EPISODES, out=out, workers=workers,
                          executor=executor))
wall = time.perf_counter() - t0
ch = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"executor": executor, "workers": workers, "episodes": m["episodes"], "frames": m["frames"],
                  "wall_s": round(wall, 2), "cluster_start_s": round(startup, 2),
                  "driver_cpu_s": round(_cpu() - c0, 2),
                  "worker_cpu_s": round(sum(actor_cpu) if executor == "ray" else ch.ru_utime + ch.ru_stime, 2),
                  "eps_per_s": round(m["episodes"] / wall, 2)}))
