"""Functions named by import path (`"package.module:function"`) in configs: prompt sources and evaluators."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


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
