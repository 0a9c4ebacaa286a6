# Iterative RLAIF-V: sample -> label -> pairs -> publish -> DPO -> publish, for K iterations.
#
#   python recipes/iterative_dpo.py --config recipes/configs/tiny_cpu.yaml          # the embedded default, on CPU
#   accelerate launch --config_file recipes/accelerate/zero2.yaml \
#       recipes/iterative_dpo.py --config recipes/configs/llava15_7b.yaml           # the paper's setting, 8 GPUs
#
# Any setting of the YAML file can be overridden on the command line (e.g. `--num_iterations 2`); `feedback` takes a
# JSON string there. Running the same command again after a crash continues where the run stopped.
"""Iterative RLAIF-V with TRL."""

import logging

import datasets
import transformers
from accelerate import PartialState
from trl import ModelConfig, TrlParser

from rlaifv_trl import RLAIFVDPOConfig
from rlaifv_trl.recipe import IterativeDPOArguments, IterativeDPORunner


def main(argv: list[str] | None = None) -> None:
    parser = TrlParser((IterativeDPOArguments, RLAIFVDPOConfig, ModelConfig))
    args, training_args, model_args = parser.parse_args_and_config(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Keep the stage progress bars (sampling, labeling, reference log-probs, training); drop the many short ones of
    # loading weights and of datasets' bookkeeping.
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    summary = IterativeDPORunner(args, training_args, model_args).run()
    if PartialState().is_main_process:
        print("\nHallucination on held-out scenes (lower is better):\n" if summary.evaluation else "")
        print(summary.table() if summary.evaluation else "", "\n\nArtifacts:\n" + summary.artifacts(), sep="")


if __name__ == "__main__":
    main()
