"""The data layer: demonstration datasets on disk and the windows training reads from them.

``format``          the reader/writer interface every dataset format implements, and the format registry
                    (``register_format``, ``open_dataset``, ``dataset_writer``)
``staging``         the write protocol under every format: atomic files, ``staging/``, shards, the folder lock
``robomimic_hdf5``  the robomimic-layout HDF5 format (shards + manifest), registered here
``lerobot_v3``      LeRobot's v3.0 layout (parquet + one video per camera per file), registered here
``export``          copy a dataset into another format (``vlagym dataset export``)
``dataset``         format-independent reads: index, load, statistics, env_args, manifest, verify
``samples``         shards of per-sample arrays with a JSON row each (vl-data's captioned images)
``windows``         ``DemoWindows``: a torch ``Dataset`` of fixed-length windows over indexed demos
"""

from vlagym.dataio import lerobot_v3 as _lerobot_v3  # noqa: F401  (registers the format)
from vlagym.dataio import robomimic_hdf5 as _robomimic_hdf5  # noqa: F401  (registers the format)
from vlagym.dataio.format import load_format_plugins as _load_format_plugins

_load_format_plugins()  # formats other packages declare under the "vlagym.dataset_formats" entry-point group
