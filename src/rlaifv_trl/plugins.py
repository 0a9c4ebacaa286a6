"""Functions named by import path (`"package.module:function"`) in configs, and the extension points other installed
packages register through entry points.

Entry-point groups (declare them in your package's `pyproject.toml`, `[project.entry-points."<group>"]`):

- `rlaifv_trl.model_names`: `prefix = "package.module:function"`; names `"<prefix>:<name>"` given as a model (policy,
  labeler, splitter, reference) are resolved by `function(name) -> path` to a local folder.
- `rlaifv_trl.evaluators`: `name = "package.module:function"`; a recipe evaluator (see `rlaifv_trl.evaluation`)
  named in `evaluation: [name]`.
- `rlaifv_trl.benchmarks`: `name = "package.module:function"`; a benchmark of `rlaifv-trl evaluate --benchmark name`
  that generates its own rows: `function(num_prompts, seed) -> dict[str, BenchmarkRows]`.
- `rlaifv_trl.chair_vocabularies`: `name = "package.module:function"`; a CHAIR vocabulary:
  `function() -> (extract_objects, normalize_name)`.

The test bed shipped beside the library (`rlaifv_testbed`) registers its built-in models, ShapesWorld and
MotionWorld evaluators, benchmark and vocabulary this way; the library never imports it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any


MODEL_NAMES = "rlaifv_trl.model_names"
EVALUATORS = "rlaifv_trl.evaluators"
BENCHMARKS = "rlaifv_trl.benchmarks"
CHAIR_VOCABULARIES = "rlaifv_trl.chair_vocabularies"


def is_import_path(name: str) -> bool:
    """Whether `name` looks like `"package.module:function"` (Hub ids and folder names have no colon there)."""
    module, sep, attribute = name.partition(":")
    return bool(sep) and bool(module) and attribute.isidentifier() and all(p.isidentifier() for p in module.split("."))


def import_function(path: str) -> Callable[..., Any]:
    """The function `"package.module:function"` names; a clear error when it does not exist."""
    if not is_import_path(path):
        raise ValueError(f"{path!r} is not an import path of the form 'package.module:function'")
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"Cannot import {module_name!r} (from {path!r}): {error}") from error
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ValueError(f"{module_name!r} has no function {attribute!r} (from {path!r})")
    return function


@cache
def _registered(group: str) -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group=group)}


def registered_names(group: str) -> list[str]:
    """The names installed packages register in the entry-point `group`, sorted."""
    return sorted(_registered(group))


def registered_function(group: str, name: str) -> Callable[..., Any] | None:
    """The function an installed package registers as `name` in the entry-point `group`; `None` if none does."""
    entry = _registered(group).get(name)
    return None if entry is None else import_function(entry.value)
