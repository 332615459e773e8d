"""vlagym: Gymnasium environments and vision-language policies for language-conditioned robot learning.

Importing `vlagym` registers every environment id (`vlagym/Tabletop<Task>-v0`, ...) with Gymnasium,
so `gymnasium.make("vlagym/TabletopPickUp-v0")` works afterwards.
"""

from vlagym.core.provenance import VERSION as __version__
from vlagym.envs import ENV_IDS, register_envs

register_envs()

__all__ = ["ENV_IDS", "__version__", "register_envs"]
