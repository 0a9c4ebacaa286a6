"""What a recipe script shows on the terminal: stage logs and progress bars, and the closing summary."""

from __future__ import annotations

import logging

import datasets
import transformers
from accelerate import PartialState

from ..recipe.summary import RunSummary


def quiet_progress_bars() -> None:
    """Log at INFO; keep the stage progress bars (sampling, labeling, reference log-probs, training) and drop the
    many short ones of loading weights and of datasets' bookkeeping."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def print_summary(summary: RunSummary) -> None:
    """The evaluation table and where the artifacts went, printed by the main process only."""
    if PartialState().is_main_process:
        table = summary.table()
        print(f"\nEvaluation (lower hallucination is better):\n\n{table}\n" if table else "")
        print("Artifacts:\n" + summary.artifacts())
