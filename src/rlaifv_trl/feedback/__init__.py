"""RLAIF-V feedback: deconfounded candidate sampling, divide-and-conquer labeling, preference pairs."""

import lazy_loader


# The public names are imported on first use; __init__.pyi lists them (and is what type checkers read).
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
