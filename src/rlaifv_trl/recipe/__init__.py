"""The iterative RLAIF-V recipe behind `recipes/iterative_dpo.py`."""

from .arguments import IterativeDPOArguments
from .runner import IterativeDPORunner, RunSummary


__all__ = ["IterativeDPOArguments", "IterativeDPORunner", "RunSummary"]
