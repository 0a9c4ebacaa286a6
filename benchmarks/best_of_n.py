"""Best-of-N scoring with the prompt + image prefix shared by the N answers, against scoring them one by one.

`LengthNormalizedRewardScorer.best_of_n` encodes each prompt and image once per model (policy and reference) and runs
the N answers packed into one sequence on a copy of its KV cache; scoring one by one (`share_prefix=False`, one answer per call)
runs a full forward over prompt + answer for each. The answers are ShapesWorld descriptions with 0 to N-1 extra
objects, so their lengths differ. Images are resized to 96 pixels by default, so that the prompt + image prefix
(156 tokens with LLaVA "small") is longer than the answers, as with real VLMs (about 600 tokens for LLaVA-1.5); the
`--image-size` option changes it. Both ways run in turns, `--rounds` times; the speedup is the median of the per-round
ratios. Target: >= 3x for N = 8.

    python benchmarks/best_of_n.py --json best_of_n.json
"""

from __future__ import annotations

import dataclasses
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers
from common import benchmark_parser, parse_options, report
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import PRESETS, ShapesWorld, build_tiny_vlm
from rlaifv_testbed.data import user_turn
from rlaifv_trl import LengthNormalizedRewardScorer


def candidates(world: ShapesWorld, seed: int, n: int) -> list[str]:
    """The true description of scene `seed` and n - 1 descriptions with 1 to n - 1 absent objects."""
    scene, rng = world.scene(seed), random.Random(seed)
    return [scene.description()] + [world.hallucinated_description(scene, rng, extra=k)[0] for k in range(1, n)]


def main() -> dict:
    parser = benchmark_parser(__doc__)
    parser.add_argument(
        "--image-size",
        type=int,
        default=96,
        help="Side images are resized to: 96 gives a 156-token prefix with LLaVA 'small' (48, the preset's, gives 48; "
        "LLaVA-1.5 has about 600). 0 keeps the preset's.",
    )
    parser.add_argument("--n", type=int, default=8, help="Candidates per prompt.")
    parser.add_argument("--prompts", type=int, default=8)
    options = parse_options(parser)

    with tempfile.TemporaryDirectory() as scratch:
        preset = PRESETS[options.preset]
        if options.image_size:
            preset = dataclasses.replace(preset, image_size=options.image_size)
        policy_dir = build_tiny_vlm(Path(scratch) / "policy", options.arch, preset, seed=1)
        reference_dir = build_tiny_vlm(Path(scratch) / "reference", options.arch, preset, seed=0)
        scorer = LengthNormalizedRewardScorer(
            AutoModelForImageTextToText.from_pretrained(policy_dir),
            AutoModelForImageTextToText.from_pretrained(reference_dir),
            AutoProcessor.from_pretrained(policy_dir),
        )
    world = ShapesWorld()
    prompt = user_turn("Describe the image.")
    tasks = [(world.scene(seed).render(), candidates(world, seed, options.n)) for seed in range(options.prompts)]

    def shared() -> list[list[float]]:
        return [scorer.best_of_n(prompt, image, answers).scores for image, answers in tasks]

    def one_by_one() -> list[list[float]]:
        return [
            [scorer.score([prompt], [image], [a], share_prefix=False)[0] for a in answers] for image, answers in tasks
        ]

    shared(), one_by_one()  # warm up
    times: dict[str, list[float]] = {"shared_prefix": [], "one_by_one": []}
    for _ in range(options.rounds):
        for name, run in (("shared_prefix", shared), ("one_by_one", one_by_one)):
            start = time.perf_counter()
            scores = run()
            times[name].append(time.perf_counter() - start)
            if name == "shared_prefix":
                shared_scores = scores
            else:
                max_difference = max(abs(a - b) for xs, ys in zip(shared_scores, scores) for a, b in zip(xs, ys))
    speedups = [o / s for o, s in zip(times["one_by_one"], times["shared_prefix"])]
    prompt_text = scorer.processor.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    prefix = scorer.processor(text=[prompt_text], images=[tasks[0][0]], return_tensors="pt")["input_ids"].shape[1]
    answer_tokens = [len(scorer.processor.tokenizer(a)["input_ids"]) for a in tasks[0][1]]
    figures = {
        "setup": {
            "arch": options.arch,
            "preset": options.preset,
            "image_size": preset.image_size,
            "n": options.n,
            "prompts": options.prompts,
            "prefix_tokens": prefix,
            "answer_tokens_min_max": [min(answer_tokens), max(answer_tokens)],
            "rounds": options.rounds,
            "torch_threads": options.threads,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        },
        "seconds_per_prompt_median": {name: statistics.median(v) / options.prompts for name, v in times.items()},
        "speedup": {"median": statistics.median(speedups), "per_round": speedups, "target": ">= 3"},
        "max_score_difference": max_difference,
    }
    figures["speedup"]["met"] = figures["speedup"]["median"] >= 3
    return report(figures, options.json)


if __name__ == "__main__":
    main()
