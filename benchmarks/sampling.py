"""Candidate sampling throughput: one prompt per `generate` call, several prompts per call, and vLLM.

Same model (a LLaVA with 32-dimensional attention heads, the smallest vLLM's CPU attention runs, sized like the demo's
`small` preset), same prompts (ShapesWorld scenes), same machine, one run. Every answer is forced to `--max-new-tokens`
tokens, so the three ways produce the same number of tokens; answers/s is the figure.

    python benchmarks/sampling.py --json sampling.json [--vllm-python .venv-vllm/bin/python]

vLLM runs in its own process (`rlaifv_trl.vllm_backend.vllm_engine`) with the same number of threads; its start-up time
(30-60 s) is reported apart and not counted in answers/s.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from common import benchmark_parser, cpu_name, parse_options, report
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import ShapesWorld, TinyVLMPreset, build_tiny_vlm
from rlaifv_trl.feedback.sampling import CandidateSampler
from rlaifv_trl.vllm_backend.vllm_engine import VLLMEngine, VLLMSettings
from rlaifv_trl.vllm_backend.vllm_feedback import VLLMCandidateSampler


PRESET = TinyVLMPreset(
    text_hidden=128, text_layers=4, text_heads=4, text_kv_heads=2, text_intermediate=256,
    vision_hidden=128, vision_layers=2, vision_heads=4, vision_intermediate=256, image_size=48,
)  # fmt: skip
PROMPT = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]


def timed(sample, prompts: int, batch: int, images, seeds) -> float:
    start = time.perf_counter()
    for i in range(0, prompts, batch):
        sample([PROMPT] * len(images[i : i + batch]), images[i : i + batch], seeds[i : i + batch])
    return time.perf_counter() - start


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch", type=int, default=16, help="Prompts per generate call when batched.")
    parser.add_argument("--vllm-python", default=os.environ.get("RLAIFV_VLLM_PYTHON"))
    parser.set_defaults(rounds=1, threads=2)
    options = parse_options(parser)
    world = ShapesWorld()
    images = [[world.scene(10_000 + i).render()] for i in range(options.prompts)]
    seeds = list(range(options.prompts))
    n, tokens = options.candidates, options.max_new_tokens
    with tempfile.TemporaryDirectory() as scratch:
        folder = build_tiny_vlm(Path(scratch) / "llava", "llava", PRESET, seed=0)
        model = AutoModelForImageTextToText.from_pretrained(folder).eval()
        processor = AutoProcessor.from_pretrained(folder)
        forced = {"min_new_tokens": tokens}
        sampler = CandidateSampler(
            model, processor, num_candidates=n, temperature=1.0, max_new_tokens=tokens, generation_kwargs=forced
        )
        answers = options.prompts * n
        seconds = {
            "one_prompt_per_call": timed(sampler.sample_batch, options.prompts, 1, images, seeds),
            "batched": timed(sampler.sample_batch, options.prompts, options.batch, images, seeds),
        }
        figures = {"cpu": cpu_name(), "threads": options.threads, "prompts": options.prompts, "candidates": n,
                   "new_tokens": tokens, "batch": options.batch}  # fmt: skip
        if options.vllm_python:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
            os.environ["OMP_NUM_THREADS"] = str(options.threads)
            start = time.perf_counter()
            settings = VLLMSettings(python=options.vllm_python, dtype="float32", max_model_len=512)
            with VLLMEngine(folder, settings) as engine:
                figures["vllm_start_seconds"] = round(time.perf_counter() - start, 1)
                vllm = VLLMCandidateSampler(
                    lambda: engine, processor, model.generation_config, num_candidates=n, temperature=1.0,
                    max_new_tokens=tokens, generation_kwargs={"min_tokens": tokens},
                )  # fmt: skip
                seconds["vllm"] = timed(vllm.sample_batch, options.prompts, options.prompts, images, seeds)
    figures["seconds"] = {name: round(value, 2) for name, value in seconds.items()}
    figures["answers_per_second"] = {name: round(answers / value, 1) for name, value in seconds.items()}
    base = seconds["one_prompt_per_call"]
    figures["speed_up_vs_one_prompt_per_call"] = {name: round(base / value, 2) for name, value in seconds.items()}
    report(figures, options.json)


if __name__ == "__main__":
    main()
