"""Crafted files that write a marker file if anything unpickles them, for the safe-loading tests.

``python tests/crafted/crafted.py`` rewrites the committed ones beside this file:

- ``marker.pkl``: a pickle whose ``__reduce__`` calls ``builtins.open(MARKER, "w")`` (relative to the
  working directory, so a test that chdirs into its tmp folder sees the marker appear there).
- ``train_state.pt``: a ``vlagym train`` checkpoint state (``optimizer``, ``step``, ``best``) that also holds
  that object, as an old pickling checkpoint or a crafted one would.
- ``checkpoint.pt``: the same for ``vlagym vl-train``.

``crafted_sb3_zip`` builds crafted SB3 zips at test time from a model the installed SB3 saved (the zip's
layout follows SB3's version, so those are not committed).
"""

from __future__ import annotations

import base64
import builtins
import io
import json
import pickle
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MARKER = "vlagym_unpickled_marker"


class WritesMarker:
    def __reduce__(self):
        return (builtins.open, (MARKER, "w"))


def marker_pickle() -> bytes:
    return pickle.dumps(WritesMarker(), protocol=2)


def crafted_sb3_zip(model_zip: Path, out: Path, data_key: str | None = None, pth_member: str | None = None) -> Path:
    """``model_zip`` with the marker pickle as the ``:serialized:`` value of ``data_key`` in its ``data`` JSON
    (a new entry if the key is not there) and/or as the whole ``pth_member`` (e.g. ``policy.pth``)."""
    payload = base64.b64encode(marker_pickle()).decode()
    with zipfile.ZipFile(model_zip) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            raw = src.read(name)
            if name == "data" and data_key is not None:
                data = json.loads(raw)
                entry = data.get(data_key) if isinstance(data.get(data_key), dict) else {":type:": "<class 'x'>"}
                data[data_key] = {**entry, ":serialized:": payload}
                raw = json.dumps(data).encode()
            if name == pth_member:
                raw = marker_pickle()
            dst.writestr(name, raw)
    return out


def write_committed() -> None:
    import torch

    (HERE / "marker.pkl").write_bytes(marker_pickle())
    w = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(w.parameters())
    buf = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "step": 4, "best": {"success_rate": -1.0, "step": None},
                "torch_rng": torch.get_rng_state(), "evil": WritesMarker()}, buf)
    (HERE / "train_state.pt").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    torch.save({"settings": {}, "step": 1, "evil": WritesMarker()}, buf)
    (HERE / "checkpoint.pt").write_bytes(buf.getvalue())


if __name__ == "__main__":
    write_committed()
