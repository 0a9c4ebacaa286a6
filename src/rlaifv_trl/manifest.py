"""The one resume mechanism of the feedback generator and the recipe: a manifest per output folder.

`manifest.json` holds the settings that decide the folder's results and the work already done (a key per finished
step, with its recorded result). A rerun with the same settings continues where the last one stopped; a rerun with
other settings is refused, naming the settings that changed.

Which settings decide results is an allow-list per config class. The project's classes list their own fields in
`result_fields`, and the others in `fields_not_affecting_results` (an output folder, a progress bar, a batch size that
only changes float rounding: those may change between runs); every field is in one of the two. The fields of
transformers' and TRL's classes are listed in `rlaifv_trl.upstream_fields`. A field in no list (one a later release
of a library adds, or one a subclass adds) is not recorded. A setting recorded on one side only (a later release of
rlaifv-trl added it to a list, or removed it) counts as unchanged when it holds its default value there.

A step that resumes on its own inside a folder's run (one iteration's feedback in a recipe run, shard by shard)
records the settings that decide its results in a section of the folder's manifest (`Manifest.section`), checked the
same way, rather than in a manifest of its own.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .atomic_io import atomic_write_json
from .upstream_fields import UPSTREAM_RESULT_FIELDS, upstream_key


logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
# What earlier releases recorded instead (the recipe's and the feedback generator's): such folders are not resumed.
LEGACY_FILES = ("run_state.json", "run.json")
_MISSING = object()


class ResultSettings(dict):
    """Settings that decide results, as plain JSON values: `{field: value}` for a config, `{part: ResultSettings}`
    for a run made of several. `defaults` holds, in the same shape, the default of every field that has one."""

    def __init__(self, values: Mapping[str, Any], defaults: Mapping[str, Any] | None = None):
        super().__init__({key: _plain_unless_settings(value) for key, value in values.items()})
        self.defaults = _plain(dict(defaults or {}))


def result_fields(config_class: type) -> frozenset[str]:
    """The fields of a config class that decide results: those listed by it and by its base classes."""
    names: set[str] = set()
    for cls in config_class.__mro__:
        names |= vars(cls).get("result_fields", UPSTREAM_RESULT_FIELDS.get(upstream_key(cls), frozenset()))
    return frozenset(names)


def own_fields(config_class: type) -> set[str]:
    """The dataclass fields declared (or redeclared) in the body of `config_class` itself."""
    annotated = inspect.get_annotations(config_class)
    return {field.name for field in dataclasses.fields(config_class) if field.name in annotated}


def result_settings(config: Any) -> ResultSettings:
    """The fields of a dataclass instance that decide results (`result_fields`), with their defaults."""
    fields = [field for field in dataclasses.fields(config) if field.name in result_fields(type(config))]
    defaults = {field.name: _default(field) for field in fields}
    return ResultSettings(
        {field.name: getattr(config, field.name) for field in fields},
        {name: value for name, value in defaults.items() if value is not _MISSING},
    )


class Manifest:
    """What a folder's run was started with and what it has finished.

    Use `Manifest.open(folder, settings)`; `finished(key)`, `result(key)` and `record(key, result)` read and write
    finished steps (the file is rewritten atomically at every record), `section(name)` the settings of a step that
    resumes on its own. Only one process may write it.
    """

    def __init__(
        self,
        path: Path,
        settings: Mapping[str, Any],
        done: dict[str, Any],
        restarted: bool = False,
        defaults: Mapping[str, Any] | None = None,
        layout: int | None = None,
        sections: dict[str, Any] | None = None,
    ):
        self.path, self.settings, self.done = path, settings, done
        self.restarted = restarted  # an earlier run with other settings was overwritten: remove its results
        self.defaults = defaults if defaults is not None else getattr(settings, "defaults", {})
        self.layout = layout
        self.sections = sections if sections is not None else {}

    @classmethod
    def open(
        cls,
        folder: str | os.PathLike,
        settings: Mapping[str, Any],
        overwrite: bool = False,
        layout: int | None = None,
    ) -> Manifest:
        """The manifest of `folder`, created if there is none.

        Raises `ValueError` naming the changed settings when the folder holds a run started with other settings,
        and when `layout` (the version of the folder's layout, recorded) differs from the recorded one, unless
        `overwrite`, which starts the manifest afresh (`restarted` is then true: the caller removes the old
        results).
        """
        path = Path(folder) / MANIFEST_FILE
        settings = settings if isinstance(settings, ResultSettings) else ResultSettings(settings)
        legacy = [name for name in LEGACY_FILES if (Path(folder) / name).is_file()]
        if legacy and not path.is_file() and not overwrite:
            raise ValueError(
                f"{folder} holds a run of an earlier release of rlaifv-trl ({legacy[0]}), which cannot be resumed: "
                "use another output folder."
            )
        restarted = False
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("layout") != layout:
                problem = (
                    f"{folder} was written by {_release(data.get('layout'), layout)} release of rlaifv-trl, with "
                    "another folder layout"
                )
            else:
                changed = changed_settings(data["settings"], settings, data.get("defaults"))
                if not changed:
                    manifest = cls(path, settings, data["done"], layout=layout, sections=data.get("sections"))
                    if _restated(data, settings):
                        manifest.save()  # settings this release records and the earlier one did not, at their defaults
                    return manifest
                problem = f"{folder} holds a run started with other settings (changed: {', '.join(changed)})"
            restarted = _start_afresh(problem, overwrite)
        manifest = cls(path, settings, {}, restarted, layout=layout)
        manifest.save()
        return manifest

    @classmethod
    def read(cls, folder: str | os.PathLike) -> Manifest:
        """The manifest as another process last wrote it."""
        path = Path(folder) / MANIFEST_FILE
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            path, data["settings"], data["done"], defaults=data.get("defaults", {}), layout=data.get("layout"),
            sections=data.get("sections"),
        )  # fmt: skip

    def finished(self, key: str) -> bool:
        return key in self.done

    def result(self, key: str) -> Any:
        """The recorded result of a finished step (it may be `None`)."""
        return self.done[key]

    def record(self, key: str, result: Any = None) -> None:
        """Mark `key` finished with its result (JSON-serializable)."""
        self.done[key] = _plain(result)
        self.save()

    def section(self, name: str) -> ManifestSection:
        """The section `name` (e.g. `"iteration-1/feedback"`), for a step that resumes on its own."""
        return ManifestSection(self, name)

    def save(self) -> None:
        layout = {} if self.layout is None else {"layout": self.layout}
        payload = {**layout, "settings": self.settings, "defaults": self.defaults, "done": self.done}
        if self.sections:
            payload["sections"] = self.sections
        atomic_write_json(self.path, payload, indent=2)


class ManifestSection:
    """The settings of one step of a folder's run that resumes on its own, in a section of the folder's manifest:
    the step's caller holds the folder's lock and hands the section over (only its main process writes it)."""

    def __init__(self, manifest: Manifest, name: str):
        self.manifest, self.name = manifest, name

    def open(self, settings: Mapping[str, Any], overwrite: bool = False) -> bool:
        """Record the step's settings, or check them against those recorded: raises `ValueError` naming the changed
        ones, unless `overwrite`, which records the new ones and returns True (the caller removes the step's
        earlier results)."""
        settings = settings if isinstance(settings, ResultSettings) else ResultSettings(settings)
        recorded = self.manifest.sections.get(self.name)
        restarted = False
        if recorded is not None:
            changed = changed_settings(recorded["settings"], settings, recorded.get("defaults"))
            if not changed and not _restated(recorded, settings):
                return False
            if changed:
                where = self.manifest.path.parent
                problem = f"{where} holds {self.name} started with other settings (changed: {', '.join(changed)})"
                restarted = _start_afresh(problem, overwrite)
        self.manifest.sections[self.name] = {"settings": settings, "defaults": settings.defaults}
        self.manifest.save()
        return restarted


def changed_settings(
    before: Mapping[str, Any], now: Mapping[str, Any], before_defaults: Mapping[str, Any] | None = None
) -> list[str]:
    """The dotted names of the settings that differ between a recorded run (`before`, with its recorded defaults)
    and `now`. A setting on one side only counts as unchanged when it holds its default value there."""
    before_defaults = before_defaults or {}
    now_defaults = getattr(now, "defaults", {})
    changed = []
    for key in before.keys() | now.keys():
        if key not in before:
            same = now_defaults.get(key, _MISSING) == now[key]
        elif key not in now:
            same = before_defaults.get(key, _MISSING) == before[key]
        elif isinstance(now[key], ResultSettings) and isinstance(before[key], dict):  # a part: compare its fields
            inner = changed_settings(before[key], now[key], before_defaults.get(key))
            changed += [f"{key}.{name}" for name in inner]
            continue
        else:
            same = before[key] == now[key]
        if not same:
            changed.append(key)
    return sorted(changed)


def _restated(recorded: Mapping[str, Any], settings: ResultSettings) -> bool:
    """Whether unchanged settings are recorded otherwise (settings or defaults one release records and another not)."""
    return recorded["settings"] != settings or recorded.get("defaults") != settings.defaults


def _start_afresh(problem: str, overwrite: bool) -> bool:
    """Refuse a run with other settings, unless `overwrite`: then it starts afresh (True)."""
    if not overwrite:
        raise ValueError(f"{problem}. Use another output folder, or delete this one to start over.")
    logger.warning("Starting afresh: %s", problem)
    return True


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return _MISSING


def _plain(value: Any) -> Any:
    """`value` as it reads back from JSON."""
    return json.loads(json.dumps(value, default=str))


def _plain_unless_settings(value: Any) -> Any:
    return value if isinstance(value, ResultSettings) else _plain(value)


def _release(recorded: int | None, current: int | None) -> str:
    return "a later" if (recorded or 0) > (current or 0) else "an earlier"
