"""The one resume mechanism of the feedback generator and the recipe: a manifest per output folder.

`manifest.json` holds the settings that decide the folder's results and the work already done (a key per finished
step, with its recorded result). A rerun with the same settings continues where the last one stopped; a rerun with
other settings is refused, naming the settings that changed. Which settings decide results is declared per field:
a config class names the fields that do not (an output folder, a progress bar, a batch size that only changes float
rounding) in its `fields_not_affecting_results` class attribute; those may change between runs, no other may.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from .atomic_io import atomic_write_json


logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
# What earlier releases recorded instead (the recipe's and the feedback generator's): such folders are not resumed.
LEGACY_FILES = ("run_state.json", "run.json")


def result_settings(config: Any) -> dict[str, Any]:
    """The fields of a dataclass instance that decide results (all but those its class declares in
    `fields_not_affecting_results`), as plain JSON values."""
    skip = set(getattr(type(config), "fields_not_affecting_results", ()))
    settings = {
        field.name: getattr(config, field.name)
        for field in dataclasses.fields(config)
        if field.name not in skip and not field.name.startswith("_")
    }
    return json.loads(json.dumps(settings, default=str))


class Manifest:
    """What a folder's run was started with and what it has finished.

    Use `Manifest.open(folder, settings)`; `finished(key)`, `result(key)` and `record(key, result)` read and write
    finished steps (the file is rewritten atomically at every record). Only one process may write it.
    """

    def __init__(self, path: Path, settings: dict[str, Any], done: dict[str, Any], restarted: bool = False):
        self.path, self.settings, self.done = path, settings, done
        self.restarted = restarted  # an earlier run with other settings was overwritten: remove its results

    @classmethod
    def open(cls, folder: str | os.PathLike, settings: dict[str, Any], overwrite: bool = False) -> Manifest:
        """The manifest of `folder`, created if there is none.

        Raises `ValueError` naming the changed settings when the folder holds a run started with other settings,
        unless `overwrite`, which starts the manifest afresh (`restarted` is then true: the caller removes the old
        results).
        """
        path = Path(folder) / MANIFEST_FILE
        settings = json.loads(json.dumps(settings, default=str))  # as it reads back from disk
        restarted = False
        legacy = [name for name in LEGACY_FILES if (Path(folder) / name).is_file()]
        if legacy and not path.is_file() and not overwrite:
            raise ValueError(
                f"{folder} holds a run of an earlier release of rlaifv-trl ({legacy[0]}), which cannot be resumed: "
                "use another output folder."
            )
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["settings"] == settings:
                return cls(path, settings, data["done"])
            changed = changed_settings(data["settings"], settings)
            if not overwrite:
                raise ValueError(
                    f"{folder} holds a run started with other settings (changed: {', '.join(changed)}). Use another "
                    "output folder, or delete this one to start over."
                )
            logger.warning("Starting %s afresh: its earlier run had other settings (%s)", folder, ", ".join(changed))
            restarted = True
        manifest = cls(path, settings, {}, restarted)
        manifest.save()
        return manifest

    @classmethod
    def read(cls, folder: str | os.PathLike) -> Manifest:
        """The manifest as another process last wrote it."""
        path = Path(folder) / MANIFEST_FILE
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(path, data["settings"], data["done"])

    def finished(self, key: str) -> bool:
        return key in self.done

    def result(self, key: str) -> Any:
        """The recorded result of a finished step (it may be `None`)."""
        return self.done[key]

    def record(self, key: str, result: Any = None) -> None:
        """Mark `key` finished with its result (JSON-serializable)."""
        self.done[key] = json.loads(json.dumps(result, default=str))
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, {"settings": self.settings, "done": self.done}, indent=2)


def changed_settings(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two nested settings mappings."""
    flat_before, flat_now = _flatten(before), _flatten(now)
    return sorted(key for key in flat_before.keys() | flat_now.keys() if flat_before.get(key) != flat_now.get(key))


def _flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys: `{"feedback": {"seed": 1}}` -> `{"feedback.seed": 1}`."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
