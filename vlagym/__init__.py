"""vlagym: Gymnasium environments and vision-language policies for language-conditioned robot learning.

Importing `vlagym` registers every environment id (`vlagym/Tabletop<Task>-v0`, ...) with Gymnasium,
so `gymnasium.make("vlagym/TabletopPickUp-v0")` works afterwards.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vlagym")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from vlagym.envs import ENV_IDS, register_envs  # noqa: E402

register_envs()

__all__ = ["ENV_IDS", "__version__", "register_envs"]
