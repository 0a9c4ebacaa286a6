"""Hallucination, recall and labeling accuracy of the built-in MotionWorld models on held-out clips (CPU).

- policy (`builtin:motionworld-qwen2vl`): descriptions of held-out clips, sampled at temperature 1.0 and greedy,
  scored against the exact ground truth (`motionworld_eval`: share of descriptions naming an absent object or a wrong
  motion, share of wrong mentions, recall of the true objects), and its accuracy on the temporal questions;
- labeler (`builtin:motionworld-qwen2vl-labeler`, and the policy as its own labeler): accuracy on balanced yes/no
  questions about objects and motions of held-out clips (`labeling_accuracy(..., world="motionworld")`).

    python benchmarks/motion_builtin.py --json motion_builtin.json
"""

from __future__ import annotations

import time

from common import benchmark_parser, cpu_name, parse_options, report
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import labeling_accuracy, motionworld_eval
from rlaifv_testbed.builtin import BUILTIN_VIDEO_LABELER, BUILTIN_VIDEO_POLICY
from rlaifv_trl.loading import resolve_model_name


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--clips", type=int, default=200, help="Held-out clips described (and questioned).")
    options = parse_options(parser)
    figures: dict = {"cpu": cpu_name(), "threads": options.threads, "clips": options.clips}
    for name in (BUILTIN_VIDEO_POLICY, BUILTIN_VIDEO_LABELER):
        folder = resolve_model_name(name)
        model = AutoModelForImageTextToText.from_pretrained(folder).eval()
        processor = AutoProcessor.from_pretrained(folder)
        start = time.perf_counter()
        entry = {}
        for label, temperature in (("sampled_t1", 1.0), ("greedy", 0.0)):
            entry[label] = motionworld_eval(
                model, processor, num_prompts=options.clips, temperature=temperature, max_new_tokens=48, seed=0,
                kinds=("describe",),
            )  # fmt: skip
        questions = motionworld_eval(
            model, processor, num_prompts=options.clips, temperature=0.0, max_new_tokens=16, seed=0,
            kinds=("moved", "direction", "first"),
        )  # fmt: skip
        entry["temporal_questions_greedy"] = {k: v for k, v in questions.items() if "accuracy" in k}
        entry["labeling_accuracy"] = labeling_accuracy(model, processor, num_scenes=options.clips, world="motionworld")
        entry["seconds"] = round(time.perf_counter() - start, 1)
        figures[name] = entry
    report(figures, options.json)


if __name__ == "__main__":
    main()
