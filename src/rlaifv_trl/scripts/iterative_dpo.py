# Copyright the rlaifv-trl contributors. Licensed under the Apache License, Version 2.0.
"""
Iterative RLAIF-V: for each iteration, sample -> divide -> conquer -> pairs -> reference log-probs -> publish the
data -> DPO -> evaluate -> publish the policy. Iteration k (from 1) samples from the policy of iteration k - 1 (the
base model for k = 1) and trains it, on the dataset config `iteration-k`, into `models/iteration-k`.

```bash
# The embedded default on CPU (ShapesWorld scenes, small built-in VLMs), or: make demo
rlaifv-trl dpo --config recipes/configs/tiny_cpu.yaml

# The paper's setting on 8 GPUs (accelerate's options go to accelerate launch, the others to the recipe)
rlaifv-trl dpo --config_file recipes/accelerate/zero2.yaml \
    --config recipes/configs/llava15_7b.yaml --prompt_dataset openbmb/RLAIF-V-Dataset \
    --dataset_repo me/rlaifv-llava15 --model_repo me/llava15-rlaifv

# The same, launched directly
accelerate launch --config_file recipes/accelerate/zero2.yaml -m rlaifv_trl.scripts.iterative_dpo \
    --config recipes/configs/llava15_7b.yaml ...
```

Every setting is a YAML key and a flag (`--num_candidates 4` overrides one setting and keeps the others). Running
the same command again after a crash or a kill continues where the run stopped, and with a larger `num_iterations` it
continues a finished run; a run with other settings in the same `output_dir` is refused, and so is a second run while
the first one is going.
"""

from __future__ import annotations

import dataclasses
import sys

from trl import ModelConfig, TrlParser, get_peft_config

from rlaifv_trl import FeedbackConfig, RLAIFVDPOConfig
from rlaifv_trl.evaluation import PolicyEvaluation
from rlaifv_trl.hub import HubAccessError, HubPushError, HubUnavailableError
from rlaifv_trl.loading import ModelLoading
from rlaifv_trl.recipe import (
    HubPublisher,
    IterativeDPOArguments,
    RecipeRun,
    RunSummary,
    add_reference_log_probs,
    check_recipe_arguments,
    collect_preferences,
    run_settings,
    train_policy,
    write_dataset_card,
    write_model_card,
)
from rlaifv_trl.scripts.console import print_summary, quiet_progress_bars
from rlaifv_trl.validation import RowValidation


def main(
    script_args: IterativeDPOArguments,
    feedback_args: FeedbackConfig,
    training_args: RLAIFVDPOConfig,
    model_args: ModelConfig,
    row_validation: RowValidation,
) -> RunSummary:
    check_recipe_arguments(script_args, training_args, model_args, row_validation)
    # Rows: one validation for the prompts, the published pairs and training, strict with strict_rows
    row_validation = dataclasses.replace(row_validation, strict=feedback_args.strict_rows)
    # Models: the policy as TRL's scripts load it (revision, dtype, attention, 4/8-bit), LoRA if asked for
    policy_loading = ModelLoading.from_model_config(model_args, training_args.trust_remote_code)
    policy_loading.check()
    peft_config = get_peft_config(model_args)
    adapter = f"LoRA r={model_args.lora_r} (merged)" if peft_config else "none (full fine-tuning)"
    revision = model_args.model_revision

    # Evaluation: named evaluators, run on the base policy and after every iteration
    evaluate = PolicyEvaluation.from_arguments(
        script_args, training_args.seed, policy_loading, disable_tqdm=training_args.disable_tqdm
    )

    settings = run_settings(script_args, feedback_args, training_args, model_args, row_validation)
    output_dir, base_model = training_args.output_dir, model_args.model_name_or_path
    with RecipeRun(output_dir, settings, base_model, script_args.model_repo, script_args.num_iterations) as run:
        hub = HubPublisher(run, script_args)
        hub.check_access()  # before any long work
        run.stage(0, "evaluate", evaluate, run.policy(0))  # the base policy
        for k in range(1, script_args.num_iterations + 1):
            # Feedback on iteration k's prompts from the policy of iteration k - 1, with its reference log-probs
            run.stage(
                k, "feedback", collect_preferences, run, k, script_args, feedback_args, training_args, policy_loading,
                row_validation,
            )  # fmt: skip
            run.stage(
                k,
                "reference_log_probs",
                add_reference_log_probs,
                run,
                k,
                training_args,
                policy_loading,
                row_validation,
            )
            write_dataset_card(run, script_args, feedback_args, training_args)
            if script_args.dataset_repo:
                run.stage(k, "push_dataset", hub.push_dataset, k)

            # DPO from the policy of iteration k - 1, also the reference, then evaluate and publish policy k
            run.stage(
                k, "train", train_policy, run, k, training_args, policy_loading, peft_config,
                script_args.checkpoint_selection, evaluate.evaluators, evaluate.settings, row_validation,
            )  # fmt: skip
            run.stage(k, "evaluate", evaluate, run.policy(k))
            run.stage(k, "model_card", write_model_card, run, k, script_args, training_args, adapter, revision)
            if script_args.model_repo:
                run.stage(k, "push_model", hub.push_model, k)

        summary = RunSummary.of(run, script_args.num_iterations, script_args.dataset_repo, script_args.model_repo)
        summary.write()
    return summary


def make_parser(prog: str | None = None) -> TrlParser:
    return TrlParser((IterativeDPOArguments, FeedbackConfig, RLAIFVDPOConfig, ModelConfig, RowValidation), prog=prog)


def run(argv: list[str] | None = None, prog: str | None = None) -> None:
    """The recipe on `argv` (the command line by default): parse, run, print the summary on the main process."""
    parser = make_parser(prog)
    arguments = parser.parse_args_and_config(argv)
    quiet_progress_bars()
    try:
        summary = main(*arguments)
    except (HubAccessError, HubUnavailableError, HubPushError) as error:  # said in one line, without a traceback
        sys.exit(f"{parser.prog}: {error}")
    print_summary(summary)


if __name__ == "__main__":
    run()
