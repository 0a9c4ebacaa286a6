"""Atomic, resumable stage outputs: one JSON file per (stage, shard) under the run's output directory.

A shard file is written to a temporary file in the same directory, flushed to disk and moved into place with
`os.replace`, so a reader sees either nothing or the whole file, even when the writer is killed. A run that finds a
shard's file skips that shard. `run.json` records the settings of the run that owns the directory, so that a rerun
with different settings cannot silently mix results.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)

STAGES = ("candidates", "claims", "labels")
RUN_FILE = "run.json"


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write `payload` as JSON to `path` so that `path` never holds a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(payload, file, ensure_ascii=False)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


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
        write_json_atomic(self.path(stage, shard), payload)
        logger.debug("Wrote %s", self.path(stage, shard))

    def read(self, stage: str, shard: int) -> dict[str, Any]:
        with open(self.path(stage, shard), encoding="utf-8") as file:
            return json.load(file)

    def check_run(self, settings: dict[str, Any], overwrite: bool) -> None:
        """Claim the directory for a run with `settings`: resume an identical run, refuse (or wipe) a different one."""
        settings = json.loads(json.dumps(settings, default=str))  # as it reads back from disk
        run_file = self.root / RUN_FILE
        if run_file.is_file():
            with open(run_file, encoding="utf-8") as file:
                previous = json.load(file)
            if previous == settings:
                return
            changed = sorted(
                key for key in settings.keys() | previous.keys() if settings.get(key) != previous.get(key)
            )
            if not overwrite:
                raise ValueError(
                    f"{self.root} holds a run with different settings ({', '.join(changed)}); use another output_dir "
                    "or set overwrite_output_dir=True"
                )
            logger.warning("Removing the results of an earlier run in %s (changed: %s)", self.root, changed)
            self.clear()
        write_json_atomic(run_file, settings)

    def clear(self) -> None:
        for name in (*STAGES, "preference", "audit"):
            shutil.rmtree(self.root / name, ignore_errors=True)
        for name in (RUN_FILE, "report.json"):
            (self.root / name).unlink(missing_ok=True)

    def remove_temporary_files(self) -> None:
        """Delete leftovers of writers that were killed mid-write (call when no writer runs)."""
        for stage in STAGES:
            for leftover in (self.root / stage).glob(".*.tmp"):
                leftover.unlink(missing_ok=True)
