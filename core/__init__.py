"""The bottom layer: generic helpers that import nothing of vlagym (see docs/ARCHITECTURE.md).

``splits``      the seed ranges of the train / val / test splits (one table, read everywhere)
``io``          atomic text writes, JSON reads that name the bad file
``resume``      "resume, or refuse if the settings differ": the comparison every run folder uses
``provenance``  version, git revision and platform stamped into manifests and reports
``stats``       the Wilson interval for success rates
``schedules``   learning-rate schedules
``env_args``    the keys of a saved policy's env_args.json
``safe_load``   loading torch checkpoints without unpickling unless trusted
"""
