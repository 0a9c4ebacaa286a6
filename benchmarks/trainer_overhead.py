"""Step time of `RLAIFVDPOTrainer` against `trl.DPOTrainer`, and with precomputed reference log-probs against without.

Three trainers on the same model, data and seed:

- `dpo`: `trl.DPOTrainer`, reference model in memory;
- `rlaifv`: `RLAIFVDPOTrainer` with the same settings (plus its reward metrics and collator checks);
- `rlaifv_precomputed`: `RLAIFVDPOTrainer` with `precompute_ref_log_probs=True` (no reference forward pass).

They run in turns, `--rounds` times, `--steps` optimizer steps each. A step's time is the wall time between the ends
of consecutive steps (data loading and image processing included); the first `--warmup` steps of a turn are left out.
Ratios are taken between medians of the same round, then their median is reported. Targets: `rlaifv / dpo <= 1.03`,
`rlaifv / rlaifv_precomputed >= 1.3` (steps at least 30% faster).

    python benchmarks/trainer_overhead.py --json trainer_overhead.json
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers
import trl
from common import StepTimer, benchmark_parser, parse_options, report
from datasets import Dataset
from transformers import AutoProcessor, PrinterCallback
from trl import DPOConfig, DPOTrainer

from rlaifv_testbed import build_tiny_vlm, oracle_preference_dataset
from rlaifv_trl import RLAIFVDPOConfig, RLAIFVDPOTrainer


def longer_answers(dataset: Dataset, repeats: int) -> Dataset:
    """Each answer's text repeated `repeats` times, for sequences closer to real descriptions."""

    def repeat(row):
        return {
            key: [
                {
                    **row[key][0],
                    "content": [{"type": "text", "text": " ".join([row[key][0]["content"][0]["text"]] * repeats)}],
                }
            ]
            for key in ("chosen", "rejected")
        }

    return dataset.map(repeat)


def main() -> dict:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--answer-repeats", type=int, default=4, help="Repeat each answer text this many times.")
    parser.add_argument("--steps", type=int, default=12, help="Optimizer steps per turn.")
    parser.add_argument("--warmup", type=int, default=2, help="Steps left out at the start of each turn.")
    options = parse_options(parser)

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = build_tiny_vlm(Path(scratch) / "model", options.arch, options.preset, seed=0)
        processor = AutoProcessor.from_pretrained(model_dir)
        num_rows = options.batch_size * options.steps
        data = longer_answers(oracle_preference_dataset(num_rows), options.answer_repeats)
        settings = {
            "output_dir": str(Path(scratch) / "out"),
            "use_cpu": not torch.cuda.is_available(),
            "bf16": False,
            "report_to": "none",
            "save_strategy": "no",
            "activation_checkpointing": False,
            "disable_tqdm": True,
            "per_device_train_batch_size": options.batch_size,
            "max_steps": options.steps,
            "learning_rate": 1e-6,
            "lr_scheduler_type": "linear",
            "warmup_steps": 0,
            "weight_decay": 0.0,
            "max_length": 2048,
            "seed": 0,
            "logging_steps": options.steps,
        }
        timers = {name: StepTimer() for name in ("dpo", "rlaifv", "rlaifv_precomputed")}
        trainers = {
            "dpo": DPOTrainer(
                model=str(model_dir), args=DPOConfig(**settings), train_dataset=data, processing_class=processor,
                callbacks=[timers["dpo"]],
            ),
            "rlaifv": RLAIFVDPOTrainer(
                model=str(model_dir), args=RLAIFVDPOConfig(**settings), train_dataset=data, processing_class=processor,
                callbacks=[timers["rlaifv"]],
            ),
        }  # fmt: skip
        start = time.perf_counter()
        trainers["rlaifv_precomputed"] = RLAIFVDPOTrainer(
            model=str(model_dir),
            args=RLAIFVDPOConfig(**settings, precompute_ref_log_probs=True),
            train_dataset=data,
            processing_class=processor,
            callbacks=[timers["rlaifv_precomputed"]],
        )
        precompute_seconds = time.perf_counter() - start
        for trainer in trainers.values():
            trainer.remove_callback(PrinterCallback)  # keep the output to the figures

        medians: dict[str, list[float]] = {name: [] for name in trainers}
        for _ in range(options.rounds):
            for name, trainer in trainers.items():
                trainer.train()
                medians[name].append(statistics.median(timers[name].times[options.warmup :]))

    overhead = [r / d for r, d in zip(medians["rlaifv"], medians["dpo"])]
    speedup = [r / p for r, p in zip(medians["rlaifv"], medians["rlaifv_precomputed"])]
    batch = trainers["dpo"].data_collator(list(data.select(range(options.batch_size))))
    figures = {
        "setup": {
            "arch": options.arch,
            "preset": options.preset,
            "batch_size": options.batch_size,
            "sequence_length": batch["input_ids"].shape[1],
            "answer_tokens_mean": batch["completion_mask"].sum(1).float().mean().item(),
            "steps_per_turn": options.steps,
            "warmup_steps_left_out": options.warmup,
            "rounds": options.rounds,
            "torch_threads": options.threads,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        },
        "step_seconds_median": {name: statistics.median(values) for name, values in medians.items()},
        "rlaifv_over_dpo": {"median": statistics.median(overhead), "per_round": overhead, "target": "<= 1.03"},
        "precomputed_speedup": {"median": statistics.median(speedup), "per_round": speedup, "target": ">= 1.30"},
        "precompute_seconds": precompute_seconds,
    }
    figures["rlaifv_over_dpo"]["met"] = figures["rlaifv_over_dpo"]["median"] <= 1.03
    figures["precomputed_speedup"]["met"] = figures["precomputed_speedup"]["median"] >= 1.30
    return report(figures, options.json)


if __name__ == "__main__":
    main()
