"""Command-line options and report output shared by the benchmarks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


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
