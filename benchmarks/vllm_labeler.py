"""Front-end CPU time per question of the vLLM labeler with a 64k-token vocabulary, three ways of reading p(yes)/p(no).

- `token_ids` (the labeler's): the yes/no tokens' log-probabilities by id (`SamplingParams.logprob_token_ids`);
- `whole_vocabulary`: the first token's log-probabilities over the whole vocabulary (`logprobs=-1`, the engine
  started with `max_logprobs=-1`), as the labeler read them before;
- `top_20`: the 20 most likely tokens (`logprobs=20`; a yes/no token outside them counts as 0).

One engine serves the three (started with `max_logprobs=-1`, which only allows the whole vocabulary to be asked for),
on the same questions, in turns, `--rounds` times after a warm-up; medians per question are reported. The model is a
tiny LLaVA (2 layers, 64 hidden, 32-dimensional heads: the model's own compute is small) whose tokenizer and output
layer are grown to `--vocab` tokens. Front-end CPU time is the time on CPU of the threads of the process that runs
`vllm.LLM` (`rlaifv_trl.vllm_backend.vllm_worker`: tokenization, output processing, the log-prob objects); the engine
core, the child process that runs the model and the sampler, is reported apart. Target: at most 1 ms per question
for `token_ids`. The probabilities of `token_ids` and `whole_vocabulary` are compared as well (largest relative
difference).

    python benchmarks/vllm_labeler.py --json vllm_labeler.json [--vllm-python .venv-vllm/bin/python]

`--arch` and `--preset` do not apply: the model is the one described above.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import benchmark_parser, cpu_name, parse_options, report
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import COLORS, SHAPES, ShapesWorld, TinyVLMPreset, build_tiny_vlm
from rlaifv_trl.feedback.labeler import render_question, single_token_ids
from rlaifv_trl.vllm_backend.vllm_engine import VLLMEngine, VLLMSettings


PRESET = TinyVLMPreset(
    text_hidden=64, text_layers=2, text_heads=2, text_kv_heads=2, text_intermediate=128,
    vision_hidden=64, vision_layers=2, vision_heads=2, vision_intermediate=128, image_size=32,
)  # fmt: skip
WAYS = {"token_ids": None, "whole_vocabulary": -1, "top_20": 20}


def grow_vocabulary(folder: Path, size: int) -> None:
    """Give the saved model `size` tokens: filler entries appended to the BPE vocabulary (never produced by encoding,
    decoded like any token) and output rows for them."""
    path = folder / "tokenizer.json"
    spec = json.loads(path.read_text())
    vocab = spec["model"]["vocab"]
    first = 1 + max([*vocab.values(), *(token["id"] for token in spec["added_tokens"])])
    vocab.update({f"filler{i}": i for i in range(first, size)})
    path.write_text(json.dumps(spec))
    assert len(AutoProcessor.from_pretrained(folder).tokenizer) == size
    model = AutoModelForImageTextToText.from_pretrained(folder)
    model.resize_token_embeddings(size)
    model.save_pretrained(folder)


def cpu_seconds(pid: int) -> float:
    """CPU time of one process's threads (`/proc/PID/task/*/schedstat`, nanoseconds), not its children's."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError):  # a thread that ended meanwhile
            continue
    return total / 1e9


def children(pid: int) -> list[int]:
    """The processes `pid` started (vLLM's engine core)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--vocab", type=int, default=65536, help="Vocabulary size of the model.")
    parser.add_argument("--questions", type=int, default=64, help="Questions per engine call (the labeler's batch).")
    parser.add_argument("--vllm-python", default=os.environ.get("RLAIFV_VLLM_PYTHON"))
    parser.set_defaults(rounds=3, threads=2)
    options = parse_options(parser)
    if not options.vllm_python:
        parser.error("needs a Python with vLLM: --vllm-python or RLAIFV_VLLM_PYTHON")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ["OMP_NUM_THREADS"] = str(options.threads)
    world = ShapesWorld()
    scenes = [world.scene(20_000 + i).render() for i in range(4)]
    asked = [f"Is there a {color} {shape} in the image? Answer yes or no." for color in COLORS for shape in SHAPES]
    with tempfile.TemporaryDirectory() as scratch:
        folder = build_tiny_vlm(Path(scratch) / "llava", "llava", PRESET, seed=0)
        grow_vocabulary(folder, options.vocab)
        processor = AutoProcessor.from_pretrained(folder)
        tokenizer = processor.tokenizer
        token_ids = [single_token_ids(tokenizer, ("yes", "Yes")), single_token_ids(tokenizer, ("no", "No"))]
        requests = [
            (render_question(processor, 1, asked[i % len(asked)]), [scenes[i % len(scenes)]])
            for i in range(options.questions)
        ]
        texts, images = [r[0] for r in requests], [r[1] for r in requests]
        settings = VLLMSettings(
            python=options.vllm_python, dtype="float32", max_model_len=512,
            engine_kwargs={"enforce_eager": True, "max_logprobs": -1},
        )  # fmt: skip
        start = time.perf_counter()
        with VLLMEngine(folder, settings) as engine:
            start_seconds = time.perf_counter() - start
            front, core = engine._process.pid, children(engine._process.pid)
            samples = {way: {"front_end": [], "engine_core": [], "wall": []} for way in WAYS}
            answers = {}
            for turn in range(options.rounds + 1):  # turn 0 warms up each way (and fills the prefix cache)
                for way, logprobs in WAYS.items():
                    before = cpu_seconds(front), sum(map(cpu_seconds, core)), time.perf_counter()
                    answers[way] = engine.next_token_probabilities(texts, images, token_ids, logprobs)
                    after = cpu_seconds(front), sum(map(cpu_seconds, core)), time.perf_counter()
                    if turn:
                        for name, a, b in zip(samples[way], before, after):
                            samples[way][name].append((b - a) / len(texts))
    exact, whole = answers["token_ids"], answers["whole_vocabulary"]
    difference = max(abs(a - b) / b for rows in zip(exact, whole) for a, b in zip(*rows))
    per_question_ms = {
        way: {name: round(1000 * statistics.median(values), 3) for name, values in measures.items()}
        for way, measures in samples.items()
    }
    new = per_question_ms["token_ids"]["front_end"]
    figures = {
        "cpu": cpu_name(),
        "threads": options.threads,
        "vocab": options.vocab,
        "questions": options.questions,
        "rounds": options.rounds,
        "vllm_start_seconds": round(start_seconds, 1),
        "per_question_ms": per_question_ms,
        "front_end_vs_token_ids": {
            way: round(measures["front_end"] / new, 1) if new else None for way, measures in per_question_ms.items()
        },
        "token_ids_vs_whole_vocabulary_max_relative_difference": difference,
        "top_20_questions_missing_yes_and_no": sum(row == [0.0, 0.0] for row in answers["top_20"]),
        "target_token_ids_front_end_ms": 1.0,
    }
    report(figures, options.json)


if __name__ == "__main__":
    main()
