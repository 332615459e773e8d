"""Tabletop manipulation environments: the Panda arm, the objects, the env and its tasks (``tasks/``)."""
