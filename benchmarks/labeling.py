"""Throughput of the RLAIF-V labeler and of candidate sampling on tiny offline VLMs (CPU), as ratios in one run.

Labeling, on the same claims, same machine, same process:
- reference: the reference implementation's way, one `generate(max_new_tokens=1, output_scores=True)` per question,
  batch 1, the image processed and encoded again for every question;
- labeler: `YesNoLabeler` (image prefix encoded once per group, questions as batched continuations of its cache);
- one-pass lower bound: each group's image prefix processed and run through the model once, plus each question
  tokenized and run once (in batches of the same size, similar lengths together, no attention to the prefix,
  next-token logits only).

Sampling: n answers per prompt from one `generate(num_return_sequences=n)` call against n separate calls, every answer
forced to the same length.

    python benchmarks/labeling.py --json labeling.json

Each method is timed the same number of times (`--repeats`), the methods taking turns so that a shared machine's load
weighs on all of them alike; the figures are the best and the median of those timings, and the speed-ups are given
for both. Tiny models run fastest on one thread, so the default is `--threads 1`.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import COLORS, PRESETS, SHAPES, ShapesWorld, TinyVLMPreset, build_tiny_vlm, prompt_dataset
from rlaifv_trl.feedback import LabelGroup, YesNoLabel, YesNoLabeler
from rlaifv_trl.feedback.labeler import labeler_messages, single_token_ids
from rlaifv_trl.feedback.sampling import CandidateSampler
from rlaifv_trl.prefix_sharing import encode_prefix


logger = logging.getLogger("benchmarks.labeling")
INSTRUCTION = "Please answer yes or no."


def claim_questions(num_questions: int, offset: int) -> list[str]:
    """Polar questions like those the rule-based writer asks about ShapesWorld answers."""
    names = [f"{color} {shape}" for color in COLORS for shape in SHAPES]
    templates = [
        "Is there a {} in the image?",
        "Is there no {} in the image?",
        "Is the {} on the left side of the picture?",
        "Does the image show a {} next to another shape?",
    ]
    questions = []
    for i in range(num_questions):
        template = templates[(i + offset) // len(names) % len(templates)]
        questions.append(f"{template.format(names[(i + offset) % len(names)])} {INSTRUCTION}")
    return questions


def timings(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict[str, float]]:
    """The best and the median of `repeats` timings of each function, the functions taking turns (a shared
    machine's load then weighs on all of them alike)."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: {"best": min(values), "median": statistics.median(values)} for name, values in times.items()}


def speedup(timed: dict[str, dict[str, float]], slow: str, fast: str) -> dict[str, float]:
    """How many times faster `fast` is than `slow`, by best and by median timing."""
    return {kind: round(timed[slow][kind] / timed[fast][kind], 2) for kind in ("best", "median")}


def reference_labels(model, processor, groups: list[LabelGroup]) -> list[list[YesNoLabel]]:
    """One `generate(max_new_tokens=1, output_scores=True)` per question, batch 1, image re-encoded each time."""
    yes_ids = single_token_ids(processor.tokenizer, ["yes", "Yes"])
    no_ids = single_token_ids(processor.tokenizer, ["no", "No"])
    labels = []
    for group in groups:
        group_labels = []
        for question in group.questions:
            messages = labeler_messages(len(group.images), question)
            text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            inputs = processor(text=[text], images=group.images, return_tensors="pt", add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(
                    **inputs, max_new_tokens=1, do_sample=False, output_scores=True, return_dict_in_generate=True
                )
            probs = out.scores[0][0].float().softmax(-1)
            group_labels.append(YesNoLabel(float(probs[yes_ids].sum()), float(probs[no_ids].sum())))
        labels.append(group_labels)
    return labels


def lower_bound(model, processor, groups: list[LabelGroup], batch_size: int) -> Callable[[], None]:
    """The one-pass bound: each image prefix processed and encoded once, each question tokenized and run once (no
    attention to the prefix, only the next-token logits, questions of similar length batched together), nothing
    else."""
    labeler = YesNoLabeler(model, processor)
    prefix_text = labeler.render(1, "@@").split("@@")[0]
    suffixes = sorted((labeler.render(1, q)[len(prefix_text) :] for g in groups for q in g.questions), key=len)

    @torch.no_grad()
    def run() -> None:
        for group in groups:
            inputs = processor(text=[prefix_text], images=group.images, return_tensors="pt", add_special_tokens=False)
            encode_prefix(model, inputs)
        for start in range(0, len(suffixes), batch_size):
            chunk = suffixes[start : start + batch_size]
            inputs = processor.tokenizer(chunk, return_tensors="pt", padding=True, padding_side="left")
            model(**inputs, logits_to_keep=1)

    return run


def parse_preset(name: str) -> TinyVLMPreset:
    """A preset by name, "tiny" or "small", optionally with another image side: "small@192" (576 LLaVA image
    tokens, as many as LLaVA-1.5 at 336 px)."""
    base, _, side = name.partition("@")
    return replace(PRESETS[base], image_size=int(side)) if side else PRESETS[base]


def benchmark_labeling(arch: str, preset: str, args: argparse.Namespace, workdir: Path) -> dict:
    path = build_tiny_vlm(workdir / f"{arch}-{preset}", arch, parse_preset(preset), seed=0)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    world = ShapesWorld()
    groups = [LabelGroup([world.scene(g).render()], claim_questions(args.questions, g)) for g in range(args.groups)]
    labeler = YesNoLabeler(model, processor, batch_size=args.batch_size)
    before, continuations = labeler._continuations(1, groups[0].questions)
    prefix_inputs = processor(text=[before], images=groups[0].images, return_tensors="pt", add_special_tokens=False)
    image_tokens = int((prefix_inputs["input_ids"] == model.config.image_token_id).sum())
    question_tokens = sum(len(ids) for ids in continuations.values()) / len(continuations)
    warm = [LabelGroup(groups[0].images, groups[0].questions[:4])]
    labeler.label(warm), reference_labels(model, processor, warm), lower_bound(model, processor, warm, 64)()

    bound = lower_bound(model, processor, groups, args.batch_size)
    timed = timings(
        {
            "reference": lambda: reference_labels(model, processor, groups),
            "labeler": lambda: labeler.label(groups),
            "lower_bound": bound,
        },
        args.repeats,
    )
    ours, theirs = labeler.label(groups), reference_labels(model, processor, groups)
    diff = max(
        max(abs(a.p_yes - b.p_yes), abs(a.p_no - b.p_no)) for ga, gb in zip(ours, theirs) for a, b in zip(ga, gb)
    )
    agree = sum(a.accepted == b.accepted for ga, gb in zip(ours, theirs) for a, b in zip(ga, gb))
    claims = args.groups * args.questions
    result = {
        "arch": arch,
        "preset": preset,
        "groups": args.groups,
        "questions_per_group": args.questions,
        "claims": claims,
        "image_tokens": image_tokens,
        "question_tokens_mean": round(question_tokens, 1),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "seconds": {name: {k: round(v, 4) for k, v in value.items()} for name, value in timed.items()},
        "claims_per_second": {name: round(claims / value["median"], 1) for name, value in timed.items()},
        "speedup_vs_reference": speedup(timed, "reference", "labeler"),
        "labeler_over_lower_bound": round(timed["labeler"]["median"] / timed["lower_bound"]["median"], 3),
        "max_abs_probability_difference": diff,
        "verdict_agreement": agree / claims,
        "full_forward_fallbacks": labeler.num_full_forwards,
    }
    result["targets_met"] = {
        "speedup_at_least_10x": min(result["speedup_vs_reference"].values()) >= 10,
        "within_1.5x_of_lower_bound": result["labeler_over_lower_bound"] <= 1.5,
        "same_probabilities_1e-4": diff <= 1e-4,
    }
    logger.info("labeling %s/%s: %s", arch, preset, json.dumps(result))
    return result


def benchmark_sampling(arch: str, preset: str, args: argparse.Namespace, workdir: Path) -> dict:
    path = workdir / f"{arch}-{preset}"
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    prompts = prompt_dataset(args.prompts)
    tokens = {"max_new_tokens": args.max_new_tokens, "generation_kwargs": {"min_new_tokens": args.max_new_tokens}}
    batched = CandidateSampler(model, processor, num_candidates=args.candidates, **tokens)
    single = CandidateSampler(model, processor, num_candidates=1, **tokens)
    rows = [prompts[i] for i in range(args.prompts)]

    def run_batched() -> None:
        for row in rows:
            batched.sample(row["prompt"], row["images"], seed=0)

    def run_separate() -> None:
        for row in rows:
            for k in range(args.candidates):
                single.sample(row["prompt"], row["images"], seed=k)

    single.sample(rows[0]["prompt"], rows[0]["images"], seed=0)  # warm-up
    timed = timings({"batched": run_batched, "separate": run_separate}, args.repeats)
    answers = args.prompts * args.candidates
    result = {
        "arch": arch,
        "preset": preset,
        "prompts": args.prompts,
        "candidates_per_prompt": args.candidates,
        "new_tokens_per_answer": args.max_new_tokens,
        "repeats": args.repeats,
        "seconds": {name: {k: round(v, 4) for k, v in value.items()} for name, value in timed.items()},
        "answers_per_second": {name: round(answers / value["median"], 1) for name, value in timed.items()},
        "speedup_batched_vs_separate": speedup(timed, "separate", "batched"),
    }
    logger.info("sampling %s/%s: %s", arch, preset, json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="Write the figures to this file")
    parser.add_argument("--archs", nargs="+", default=["llava", "qwen2_vl"])
    parser.add_argument(
        "--presets", nargs="+", default=["tiny", "small", "small@192"], help='"tiny", "small", or "<preset>@<px>"'
    )
    parser.add_argument("--groups", type=int, default=8, help="(image, prompt) groups labeled")
    parser.add_argument("--questions", type=int, default=40, help="Questions per group (10 answers x 4 claims)")
    parser.add_argument("--batch-size", type=int, default=64, help="Questions per labeler forward pass")
    parser.add_argument("--prompts", type=int, default=4, help="Prompts in the sampling benchmark")
    parser.add_argument("--candidates", type=int, default=10, help="Answers per prompt in the sampling benchmark")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="Tokens per answer in the sampling benchmark")
    parser.add_argument("--repeats", type=int, default=3, help="Timings of every method (the same for all)")
    parser.add_argument("--skip-sampling", action="store_true", help="Only the labeling benchmark")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    figures = {
        "settings": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}},
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "labeling": [],
        "sampling": [],
    }
    with tempfile.TemporaryDirectory() as workdir:
        for arch in args.archs:
            for preset in args.presets:
                figures["labeling"].append(benchmark_labeling(arch, preset, args, Path(workdir)))
                if not args.skip_sampling:
                    figures["sampling"].append(benchmark_sampling(arch, preset, args, Path(workdir)))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
