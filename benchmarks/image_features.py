"""DPO step time with each image encoded once per pair (`encode_images_once=True`) against twice (TRL's way).

Two `RLAIFVDPOTrainer`s on the same model, data and seed, reference log-probs precomputed, taking turns `--rounds`
times for `--steps` optimizer steps each; a step's time is the wall time between the ends of consecutive steps, the
first `--warmup` of a turn left out. The model is a LLaVA whose vision tower sees 576 patches per image (LLaVA-1.5's
count), so that the tower's share of a step is close to a real one's.

    python benchmarks/image_features.py --json image_features.json
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import torch
from common import StepTimer, benchmark_parser, cpu_name, parse_options, report
from transformers import AutoProcessor, PrinterCallback

from rlaifv_testbed import TinyVLMPreset, build_tiny_vlm, oracle_preference_dataset
from rlaifv_trl import RLAIFVDPOConfig, RLAIFVDPOTrainer


# 192 px / 8 px patches = 24 x 24 = 576 image tokens; a vision tower as deep as the language model.
PRESET = TinyVLMPreset(
    text_hidden=128, text_layers=4, text_heads=4, text_kv_heads=2, text_intermediate=256,
    vision_hidden=128, vision_layers=4, vision_heads=4, vision_intermediate=256, image_size=192,
)  # fmt: skip


def main() -> dict:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.set_defaults(rounds=3)
    options = parse_options(parser)
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = build_tiny_vlm(Path(scratch) / "model", "llava", PRESET, seed=0)
        processor = AutoProcessor.from_pretrained(model_dir)
        data = oracle_preference_dataset(options.batch_size * options.steps)
        timers = {"twice": StepTimer(), "once": StepTimer()}
        trainers = {}
        for name in timers:
            args = RLAIFVDPOConfig(
                output_dir=str(Path(scratch) / name), use_cpu=not torch.cuda.is_available(), bf16=False,
                report_to="none", save_strategy="no", disable_tqdm=True, per_device_train_batch_size=options.batch_size,
                max_steps=options.steps, learning_rate=1e-6, warmup_steps=0, seed=0, logging_steps=options.steps,
                precompute_ref_log_probs=True, encode_images_once=name == "once",
            )  # fmt: skip
            trainers[name] = RLAIFVDPOTrainer(
                model=str(model_dir), args=args, train_dataset=data, processing_class=processor,
                callbacks=[timers[name]],
            )  # fmt: skip
            trainers[name].remove_callback(PrinterCallback)
        medians: dict[str, list[float]] = {name: [] for name in trainers}
        for _ in range(options.rounds):
            for name, trainer in trainers.items():
                trainer.train()
                medians[name].append(statistics.median(timers[name].times[options.warmup :]))
        shared = trainers["once"].image_features_sharing.num_shared
    ratios = [once / twice for once, twice in zip(medians["once"], medians["twice"])]
    figures = {
        "cpu": cpu_name(),
        "torch_threads": options.threads,
        "image_tokens": (PRESET.image_size // PRESET.patch_size) ** 2,
        "batch_size": options.batch_size,
        "step_seconds_median": {name: statistics.median(values) for name, values in medians.items()},
        "once_over_twice": {"median": statistics.median(ratios), "per_round": ratios},
        "vision_calls_on_half_the_images": shared,
    }
    return report(figures, options.json)


if __name__ == "__main__":
    main()
