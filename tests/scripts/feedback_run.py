"""Run the feedback generator on ShapesWorld prompts, alone or under `torchrun`; used by tests/test_feedback_resume.py
and tests/test_vllm_tensor_parallel.py.

With `--hang-at-label-shard K` the run stops inside the labeling stage, when shard K starts: it writes `--marker` and
sleeps until it is killed. With `--labeler` the labeler is that model, on vLLM (`--vllm-python`, engines of
`--tensor-parallel-size` GPUs); `--report` then gets, per process, the vLLM engines it started and the processes it
left running when the feedback returned.
"""

import argparse
import json
import logging
import os
import time
from pathlib import Path

import torch

from rlaifv_testbed import prompt_dataset
from rlaifv_trl import FeedbackConfig, RLAIFVFeedbackGenerator


class HangAtShard(logging.Handler):
    def __init__(self, message: str, marker: Path):
        super().__init__(logging.DEBUG)
        self.message, self.marker = message, marker

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == self.message:
            self.marker.write_text("labeling")
            time.sleep(600)


class EngineStarts(logging.Handler):
    """Counts the vLLM engines this process starts."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += record.getMessage().startswith("Starting a vLLM engine")


def descendants(pid: int) -> list[str]:
    """The command lines of the processes below `pid`."""
    parents = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    lines = []
    for child in found:
        try:
            lines.append((Path("/proc") / str(child) / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return lines


def vllm_settings(args: argparse.Namespace) -> dict:
    if args.labeler is None:
        return {}
    return {
        "labeler_model_name_or_path": args.labeler, "labeler_backend": "vllm", "vllm_python": args.vllm_python,
        "vllm_tensor_parallel_size": args.tensor_parallel_size, "vllm_max_model_len": 512,
        "vllm_engine_kwargs": {"enforce_eager": True},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--policy", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--num-prompts", type=int, default=8)
    parser.add_argument("--num-candidates", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=10)
    parser.add_argument("--shard-size", type=int, default=2)
    parser.add_argument("--hang-at-label-shard", type=int)
    parser.add_argument("--marker", type=Path)
    parser.add_argument("--labeler")
    parser.add_argument("--vllm-python")
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()

    if args.hang_at_label_shard is not None:
        logger = logging.getLogger("rlaifv_trl.feedback.runner")
        logger.setLevel(logging.DEBUG)
        logger.addHandler(HangAtShard(f"labels: shard {args.hang_at_label_shard} started", args.marker))
    engines = EngineStarts()
    engine_logger = logging.getLogger("rlaifv_trl.vllm_backend.vllm_engine")
    engine_logger.setLevel(logging.INFO)
    engine_logger.addHandler(engines)
    config = FeedbackConfig(
        num_candidates=args.num_candidates, max_new_tokens=args.max_new_tokens, shard_size=args.shard_size,
        **vllm_settings(args),
    )  # fmt: skip
    generator = RLAIFVFeedbackGenerator(args.policy, args=config)
    generator.generate(prompt_dataset(args.num_prompts), args.output_dir, disable_tqdm=True)
    if args.report is not None:
        rank = int(os.environ.get("RANK", "0"))
        report = {"rank": rank, "engines_started": engines.count, "left_running": descendants(os.getpid())}
        (args.report.parent / f"{args.report.name}-{rank}.json").write_text(json.dumps(report))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
