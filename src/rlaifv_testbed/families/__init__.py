"""Tiny stand-ins of the vision-language families the project supports, one module per family.

Each module of this package defines `FAMILY`, a `Family`: the family's name (its `model_type`, also the `arch` of
`build_tiny_vlm`), what it stands in for, and `build(spec, seed) -> (model, processor)`, which makes a randomly
initialised model of the family's own classes with a locally trained tokenizer carrying the family's special tokens
and real chat template, and the family's own image processor. `tests/test_families.py` runs every path of the
project on each (sampling, labeling, reference log-probs, DPO with and without LoRA, Best-of-N, a recipe iteration);
`scripts/supported_families.py` renders the README's table from `FAMILIES`.

Adding a family: write `families/<model_type>.py` with its `FAMILY`, run `pytest tests/test_families.py -k <name>`,
and regenerate the README table.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    """A supported vision-language family and how its tiny stand-in is made.

    Attributes:
        name: The family's `model_type`.
        display: Its usual name ("Qwen2.5-VL").
        examples: Checkpoints of the family on the Hub.
        build: `build(spec, seed) -> (model, processor)`.
        needs_torchvision: Its processor needs torchvision (a video processor).
        notes: What the family needs that others do not (shown in the README's table).
    """

    name: str
    display: str
    examples: str
    build: Callable[[Any, int], tuple[Any, Any]]
    needs_torchvision: bool = False
    notes: str = ""


def _discover() -> dict[str, Family]:
    families = {}
    for module in pkgutil.iter_modules(__path__):
        family = importlib.import_module(f"{__name__}.{module.name}").FAMILY
        families[family.name] = family
    return dict(sorted(families.items()))


FAMILIES: dict[str, Family] = _discover()
