"""Hallucination evaluation: the recipes' evaluators (`evaluators`) and `rlaifv-trl evaluate`'s benchmarks on POPE and
CHAIR datasets (`hallucination`)."""

import lazy_loader


# The public names are imported on first use; __init__.pyi lists them (and is what type checkers read).
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
