"""Hallucination metrics: CHAIR (object mentions in descriptions) and POPE (yes/no existence questions).

Each metric is a plain function and an `evaluate` module shipped with the package:

```python
import evaluate
from rlaifv_trl.metrics import module_path

chair = evaluate.load(module_path("chair"))
chair.compute(predictions=["A man on a bench."], references=[["person"]], vocabulary="coco")
```
"""

from __future__ import annotations

from pathlib import Path

from .chair import ChairResult, chair, chair_metrics, vocabularies, vocabulary_extractor
from .coco import coco_categories, coco_category, coco_objects, coco_synonyms
from .pope import parse_yes_no, pope_metrics


MODULES = ("chair", "pope")


def module_path(name: str) -> str:
    """The folder of an `evaluate` module shipped with the package ("chair" or "pope"), for `evaluate.load`."""
    if name not in MODULES:
        raise ValueError(f"Unknown metric module {name!r}: use one of {MODULES}")
    return str(Path(__file__).resolve().parent / "modules" / name)


__all__ = [
    "MODULES",
    "ChairResult",
    "chair",
    "chair_metrics",
    "coco_categories",
    "coco_category",
    "coco_objects",
    "coco_synonyms",
    "module_path",
    "parse_yes_no",
    "pope_metrics",
    "vocabularies",
    "vocabulary_extractor",
]
