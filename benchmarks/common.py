"""Command-line options and report output shared by the benchmarks."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import TrainerCallback


def benchmark_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the options every benchmark takes: model, rounds, threads and `--json`."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="llava", choices=["llava", "qwen2_vl"])
    parser.add_argument("--preset", default="small", choices=["tiny", "small"])
    parser.add_argument("--rounds", type=int, default=5, help="Turns of each way of running; medians are reported.")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 avoids waiting on busy shared cores)."
    )
    parser.add_argument("--json", type=Path, help="Write the figures to this file.")
    return parser


def parse_options(parser: argparse.ArgumentParser) -> argparse.Namespace:
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    return options


def report(figures: dict, path: Path | None) -> dict:
    """Print the figures as JSON, and write them to `path` when given."""
    text = json.dumps(figures, indent=2)
    print(text)
    if path:
        path.write_text(text)
    return figures


class StepTimer(TrainerCallback):
    """Wall time between the ends of consecutive optimizer steps (the first from the start of training)."""

    def __init__(self):
        self.times: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.times, self.last = [], time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now


def cpu_name() -> str:
    """The CPU's model name, as `lscpu` shows it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        return platform.processor() or "unknown"
