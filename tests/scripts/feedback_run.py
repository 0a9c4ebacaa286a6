"""Run the feedback generator on ShapesWorld prompts, alone or under `torchrun`; used by tests/test_feedback_resume.py.

With `--hang-at-label-shard K` the run stops inside the labeling stage, when shard K starts: it writes `--marker` and
sleeps until it is killed.
"""

import argparse
import logging
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
    args = parser.parse_args()

    if args.hang_at_label_shard is not None:
        logger = logging.getLogger("rlaifv_trl.feedback.runner")
        logger.setLevel(logging.DEBUG)
        logger.addHandler(HangAtShard(f"labels: shard {args.hang_at_label_shard} started", args.marker))
    config = FeedbackConfig(
        num_candidates=args.num_candidates, max_new_tokens=args.max_new_tokens, shard_size=args.shard_size
    )
    generator = RLAIFVFeedbackGenerator(args.policy, args=config)
    generator.generate(prompt_dataset(args.num_prompts), args.output_dir, disable_tqdm=True)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
