"""Peak memory and throughput of the labeler, its questions packed on one prefix cache against padded rows.

`YesNoLabeler` labels the questions of a group on the KV cache of the group's image prefix. Packed (the default), a
batch of questions runs in the few rows that hold the least memory (2 here) on that cache; padded (`pack=False`), each
question is a row of its own and each layer repeats the prefix per row, so memory grows with rows x prefix. The model
is a tiny LLaVA whose KV cache matters (512 hidden, 8 layers, 8 key/value heads, float32) with LLaVA-1.5's 576 image
tokens (a 192 px image in 8 px patches).

Memory: each configuration (packed or padded, 1 or `--questions` questions in one batch) runs in a fresh process,
which loads the model, labels one warm-up question about another image, then labels the group. Its labeling memory
is the peak resident set size during that labeling (`VmHWM`, reset through `/proc/self/clear_refs` first) minus the
resident set size right before it: the memory the labeling adds to the loaded model. The process allocates every
block of 64 KiB or more with its own mapping (`MALLOC_MMAP_THRESHOLD_`) and returns freed memory to the system
(`malloc_trim`) before it starts: memory the warm-up freed but glibc kept would otherwise be reused unseen. Target: the packed labeling of
`--questions` questions adds at most 2x what one question adds.

Throughput: the same group labeled packed and padded in turns in one process, `--rounds` times; claims/s from the
median times. Target: packed no slower.

    python benchmarks/labeler_memory.py --json labeler_memory.json

`--preset` does not apply here: the model is the one described above.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import benchmark_parser, cpu_name, parse_options, report
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import COLORS, SHAPES, ShapesWorld, TinyVLMPreset, build_tiny_vlm
from rlaifv_trl.feedback import LabelGroup, YesNoLabeler


PRESET = TinyVLMPreset(
    text_hidden=512, text_layers=8, text_heads=8, text_kv_heads=8, text_intermediate=1024,
    vision_hidden=128, vision_layers=2, vision_heads=4, vision_intermediate=256, image_size=192, patch_size=8,
)  # fmt: skip
TEMPLATES = [
    "Is there a {} in the image?",
    "Is there no {} in the image?",
    "Is the {} on the left side of the picture?",
    "Does the image show a {} next to another shape?",
    "Is the {} larger than the other shapes?",
    "Can you see exactly one {} here?",
]


def questions(count: int) -> list[str]:
    """`count` distinct polar questions about ShapesWorld objects."""
    names = [f"{color} {shape}" for color in COLORS for shape in SHAPES]
    asked = [template.format(name) for template in TEMPLATES for name in names]
    if count > len(asked):
        raise ValueError(f"At most {len(asked)} distinct questions, asked for {count}")
    return [f"{question} Please answer yes or no." for question in asked[:count]]


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE).group(1))


def _reset_peak() -> bool:
    """Reset the peak resident set size (`VmHWM`) to the current one; `False` where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def measure(model_dir: str, pack: bool, count: int, batch_size: int) -> dict:
    """In this process: load the model, warm up, then label `count` questions; the memory the labeling adds."""
    import ctypes
    import gc
    import resource

    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    labeler = YesNoLabeler(model, AutoProcessor.from_pretrained(model_dir), batch_size=batch_size, pack=pack)
    world = ShapesWorld()
    labeler.label_group(LabelGroup([world.scene(1).render()], questions(1)))  # warm-up: lazy allocations
    group = LabelGroup([world.scene(0).render()], questions(count))
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    exact = _reset_peak()
    before = _status_kib("VmRSS")
    labels = labeler.label_group(group)
    peak = _status_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "labeling_peak_mib": round((peak - before) / 1024, 1),
        "rss_before_labeling_mib": round(before / 1024, 1),
        "peak_method": "VmHWM after clear_refs" if exact else "ru_maxrss",
        "p_yes_first": labels[0].p_yes,
    }


def measure_in_subprocess(model_dir: Path, pack: bool, count: int, options: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--measure", str(model_dir), "--questions", str(count)]
    command += ["--batch-size", str(options.batch_size), "--threads", str(options.threads)]
    command += [] if pack else ["--padded"]
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}  # freed tensors leave the resident set
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=environment).stdout
    return json.loads(output.strip().splitlines()[-1])


def throughput(model_dir: Path, options: argparse.Namespace) -> dict:
    """Claims per second labeling the same group packed and padded, in turns; also their largest difference."""
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    labelers = {
        name: YesNoLabeler(model, processor, batch_size=options.batch_size, pack=name == "packed")
        for name in ("padded", "packed")
    }
    world = ShapesWorld()
    group = LabelGroup([world.scene(0).render()], questions(options.questions))
    before, continuations = labelers["packed"]._continuations(1, group.questions)
    prefix_ids = labelers["packed"]._inputs(before, group.images)["input_ids"][0].tolist()
    for labeler in labelers.values():
        labeler.label_group(LabelGroup([world.scene(1).render()], questions(2)))  # warm-up
    times: dict[str, list[float]] = {name: [] for name in labelers}
    labels = {}
    for _ in range(options.rounds):
        for name, labeler in labelers.items():
            start = time.perf_counter()
            labels[name] = labeler.label_group(group)
            times[name].append(time.perf_counter() - start)
    difference = max(
        max(abs(a.p_yes - b.p_yes), abs(a.p_no - b.p_no)) for a, b in zip(labels["packed"], labels["padded"])
    )
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "prefix_tokens": len(prefix_ids),
        "image_tokens": prefix_ids.count(model.config.image_token_id),
        "question_tokens": sum(len(ids) for ids in continuations.values()),
        "claims_per_second": {name: round(options.questions / value, 1) for name, value in medians.items()},
        "median_seconds": {name: round(value, 4) for name, value in medians.items()},
        "packed_over_padded_speed": round(medians["padded"] / medians["packed"], 3),
        "max_abs_probability_difference": difference,
    }


def main() -> dict:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--questions", type=int, default=64, help="Questions about the image, one batch.")
    parser.add_argument("--batch-size", type=int, default=64, help="Questions per forward pass.")
    parser.add_argument("--measure", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--padded", action="store_true", help=argparse.SUPPRESS)
    options = parse_options(parser)
    if options.measure:
        print(json.dumps(measure(options.measure, not options.padded, options.questions, options.batch_size)))
        return {}

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = build_tiny_vlm(Path(scratch) / "labeler", options.arch, PRESET, seed=0)
        memory = {
            name: {
                f"{count}_questions": measure_in_subprocess(model_dir, name == "packed", count, options)
                for count in (1, options.questions)
            }
            for name in ("padded", "packed")
        }
        speed = throughput(model_dir, options)

    def ratio(name: str) -> float:
        runs = memory[name]
        return round(
            runs[f"{options.questions}_questions"]["labeling_peak_mib"] / runs["1_questions"]["labeling_peak_mib"], 2
        )

    figures = {
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "threads": options.threads,
        "setup": {
            "arch": options.arch,
            "preset": vars(PRESET),
            "dtype": "float32",
            "prefix_tokens": speed.pop("prefix_tokens"),
            "image_tokens": speed.pop("image_tokens"),
            "questions": options.questions,
            "question_tokens": speed.pop("question_tokens"),
            "batch_size": options.batch_size,
            "rounds": options.rounds,
        },
        "labeling_peak_mib": {
            name: {count: runs[count]["labeling_peak_mib"] for count in runs} for name, runs in memory.items()
        },
        "many_over_one_question_peak": {name: ratio(name) for name in memory},
        "memory_runs": memory,
        **speed,
    }
    figures["targets_met"] = {
        "packed_many_questions_at_most_2x_one": figures["many_over_one_question_peak"]["packed"] <= 2,
        "packed_claims_per_second_not_lower": speed["packed_over_padded_speed"] >= 1,
        "same_probabilities_1e-4": speed["max_abs_probability_difference"] <= 1e-4,
    }
    return report(figures, options.json)


if __name__ == "__main__":
    main()
