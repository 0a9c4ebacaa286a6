"""DPO step time on the CPU in float32 and in bf16 autocast, and the default `RLAIFVDPOConfig` picks here.

TRL's configs default to `bf16=True`. On a CPU without native bfloat16 instructions (AVX512-BF16, AMX, ARM BF16),
bf16 autocast is emulated; `RLAIFVDPOConfig` then defaults to float32. Both ways train the same model on the same
data in turns, `--rounds` times; the ratio of median step times is taken within each round.

    python benchmarks/cpu_dtype.py --json cpu_dtype.json
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from common import StepTimer, benchmark_parser, cpu_name, parse_options, report
from transformers import PrinterCallback

from rlaifv_testbed import build_tiny_vlm, oracle_preference_dataset
from rlaifv_trl import RLAIFVDPOConfig, RLAIFVDPOTrainer
from rlaifv_trl.trainer.rlaifv_dpo_config import cpu_has_native_bf16


def main() -> dict:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6, help="Optimizer steps per turn.")
    parser.add_argument("--warmup", type=int, default=1, help="Steps left out at the start of each turn.")
    options = parse_options(parser)
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = build_tiny_vlm(Path(scratch) / "model", options.arch, options.preset, seed=0)
        data = oracle_preference_dataset(options.batch_size * options.steps)
        settings = {
            "use_cpu": True, "report_to": "none", "save_strategy": "no", "activation_checkpointing": False,
            "disable_tqdm": True, "per_device_train_batch_size": options.batch_size, "max_steps": options.steps,
            "max_length": 512, "seed": 0, "logging_steps": options.steps,
        }  # fmt: skip
        default = RLAIFVDPOConfig(str(Path(scratch) / "default"), **settings)
        timers = {name: StepTimer() for name in ("float32", "bf16")}
        trainers = {
            name: RLAIFVDPOTrainer(
                model=str(model_dir), args=RLAIFVDPOConfig(str(Path(scratch) / name), bf16=name == "bf16", **settings),
                train_dataset=data, callbacks=[timers[name]],
            )
            for name in timers
        }  # fmt: skip
        for trainer in trainers.values():
            trainer.remove_callback(PrinterCallback)
        medians: dict[str, list[float]] = {name: [] for name in trainers}
        for _ in range(options.rounds):
            for name, trainer in trainers.items():
                trainer.train()
                medians[name].append(statistics.median(timers[name].times[options.warmup :]))
    ratios = [b / f for b, f in zip(medians["bf16"], medians["float32"])]
    return report(
        {
            "cpu": cpu_name(),
            "native_bf16": cpu_has_native_bf16(),
            "default_bf16": default.bf16,
            "setup": {
                "arch": options.arch,
                "preset": options.preset,
                "batch_size": options.batch_size,
                "torch_threads": options.threads,
                "rounds": options.rounds,
            },  # fmt: skip
            "step_seconds_median": {name: statistics.median(values) for name, values in medians.items()},
            "bf16_over_float32": {"median": statistics.median(ratios), "per_round": ratios},
        },
        options.json,
    )


if __name__ == "__main__":
    main()
