"""One validation layer for every entry point that reads rows: the recipe's prompts, `RLAIFVFeedbackGenerator`,
`load_preference_dataset`, `RLAIFVDPOTrainer` and `rlaifv-trl evaluate`.

Each row is checked once (lazily for a stream). A bad row is skipped with a stable code (`CODES`), the field and a
short message, and counted in a report where `kept + skipped == rows`; `strict=True` raises on the first bad row,
naming it, instead.
"""

import lazy_loader


# The public names are imported on first use; __init__.pyi lists them (and is what type checkers read).
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
