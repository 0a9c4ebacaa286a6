"""Atomic, resumable stage outputs: one JSON file per (stage, shard) under the run's output directory.

A shard file is written atomically (`rlaifv_trl.atomic_io`), so a reader sees either nothing or the whole file, even
when the writer is killed. A run that finds a shard's file skips that shard; the settings of the run that owns the
folder are recorded (its `manifest.json`, or a section of the manifest of the run folder holding it), so that a rerun
with different settings cannot silently mix results.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from ..atomic_io import atomic_write_json
from ..manifest import MANIFEST_FILE
from .pipeline import STAGES


logger = logging.getLogger(__name__)


class ShardStore:
    """The stage shards of one run, under `root/<stage>/shard-<index>.json`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, stage: str, shard: int) -> Path:
        if stage not in STAGES:
            raise ValueError(f"Unknown stage {stage!r}; expected one of {STAGES}")
        return self.root / stage / f"shard-{shard:05d}.json"

    def done(self, stage: str, shard: int) -> bool:
        return self.path(stage, shard).is_file()

    def write(self, stage: str, shard: int, payload: dict[str, Any]) -> None:
        atomic_write_json(self.path(stage, shard), payload, ensure_ascii=False)
        logger.debug("Wrote %s", self.path(stage, shard))

    def read(self, stage: str, shard: int) -> dict[str, Any]:
        with open(self.path(stage, shard), encoding="utf-8") as file:
            return json.load(file)

    def clear(self) -> None:
        """Remove every result of an earlier run (not its manifest)."""
        for name in (*STAGES, "preference", "audit", "rankings"):
            shutil.rmtree(self.root / name, ignore_errors=True)
        (self.root / "report.json").unlink(missing_ok=True)


__all__ = ["MANIFEST_FILE", "STAGES", "ShardStore"]
