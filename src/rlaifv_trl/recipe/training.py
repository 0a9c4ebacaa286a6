"""An iteration's DPO training: `RLAIFVDPOTrainer` on the iteration's pairs, resumed from the last complete checkpoint,
and the trained policy saved as a full model (a LoRA adapter is merged) into `models/iteration-<k>`."""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, Trainer, TrainerCallback, TrainerState
from transformers.trainer import TRAINING_ARGS_NAME

from ..artifacts import config_name, dataset_dir, model_dir
from ..atomic_io import TEMPORARY_SUFFIX, move_into_place
from ..data import load_preference_dataset
from ..evaluation import EvaluationSettings, Evaluator, EvaluatorCallback
from ..loading import ModelLoading, copy_custom_code
from ..trainer import RLAIFVDPOConfig, RLAIFVDPOTrainer
from ..trainer.checkpoints import last_complete_checkpoint
from ..validation import RowValidation
from .run import RecipeRun


logger = logging.getLogger(__name__)


class ResumableCheckpoints(TrainerCallback):
    """Makes checkpoints resume into the same run.

    The running loss is logged at every checkpoint and at the last step: a run resumed from a checkpoint restarts the
    Trainer's running loss there, so logging at every checkpoint makes its log history, and the training loss
    computed from it, the same as an uninterrupted run's. (The trainers' `CheckpointsMixin` gives the checkpoints'
    files the modes of the process's umask.)
    """

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save or state.global_step >= state.max_steps:
            control.should_log = True


def training_metrics(state: TrainerState) -> dict[str, Any]:
    """The training loss (mean over all steps, from the logged losses), steps and epochs of a finished training."""
    total, previous = 0.0, 0
    for entry in state.log_history:
        if "loss" in entry:
            total += entry["loss"] * (entry["step"] - previous)
            previous = entry["step"]
    return {
        "train_loss": round(total / previous, 6) if previous else math.nan,
        "global_step": state.global_step,
        "epoch": round(state.epoch or 0.0, 6),
    }


def train_policy(
    run: RecipeRun,
    iteration: int,
    training_args: RLAIFVDPOConfig,
    policy_loading: ModelLoading,
    peft_config=None,
    checkpoint_selection: str = "last",
    evaluators: dict[str, Evaluator] | None = None,
    evaluation: EvaluationSettings | None = None,
    row_validation: RowValidation | None = None,
) -> dict[str, Any]:
    """Train the policy of `iteration - 1` on the pairs of `iteration` into the policy of `iteration`; returns
    training metrics.

    Training resumes from the last complete checkpoint of an earlier, interrupted attempt. With
    `checkpoint_selection="best"` the model is evaluated (evaluators included) every quarter epoch and the best
    checkpoint by `metric_for_best_model` is kept.
    """
    output_dir = run.training_dir(iteration)
    train_dataset = load_preference_dataset(str(dataset_dir(run.root)), name=config_name(iteration))
    init_kwargs = {key: value for key, value in policy_loading.model_kwargs().items() if key != "quantization_config"}
    if isinstance(training_args.model_init_kwargs, dict):
        init_kwargs.update(training_args.model_init_kwargs)
    overrides: dict[str, Any] = {"output_dir": str(output_dir), "model_init_kwargs": init_kwargs}
    callbacks: list[TrainerCallback] = [ResumableCheckpoints()]
    eval_dataset = None
    if checkpoint_selection == "best":
        overrides.update(
            eval_strategy="steps", eval_steps=0.25, save_strategy="steps", save_steps=0.25, load_best_model_at_end=True
        )
        callbacks.append(EvaluatorCallback(evaluators or {}, evaluation or EvaluationSettings()))
        eval_dataset = train_dataset.select(
            range(min(len(train_dataset), 2 * training_args.per_device_eval_batch_size))
        )
    policy = policy_loading.locate(run.policy(iteration - 1))
    holder = [
        RLAIFVDPOTrainer(
            model=policy,
            args=dataclasses.replace(training_args, **overrides),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            callbacks=callbacks,
            peft_config=peft_config,
            quantization_config=policy_loading.quantization_config(),
            row_validation=row_validation,
        )
    ]
    return train_and_save(holder, run, iteration, policy, peft_config, policy_loading)


def train_and_save(
    holder: list[Trainer], run: RecipeRun, iteration: int, policy: str, peft_config, policy_loading: ModelLoading
) -> dict[str, Any]:
    """Train (from the last complete checkpoint in the trainer's `output_dir`, if any) and save the result as the
    full policy of `iteration` (a LoRA adapter merged into `policy`); returns the training metrics.

    `holder` holds the only reference to the trainer, emptied before a LoRA adapter is merged, so that the trained
    model's memory is freed first."""
    process = run.process
    trainer = holder.pop()
    checkpoint = last_complete_checkpoint(Path(trainer.args.output_dir))
    if checkpoint:
        logger.info("Resuming the training of iteration %d from %s", iteration, checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)

    target = model_dir(run.root, iteration)
    staging = target.with_name(f".{target.name}{TEMPORARY_SUFFIX}")  # the same on every process
    adapter = target.with_name(f".{target.name}-adapter{TEMPORARY_SUFFIX}")
    trainer.save_model(str(adapter if peft_config is not None else staging))  # every process: ZeRO-3 gathers
    metrics = training_metrics(trainer.state)
    processor = trainer.processing_class
    del trainer
    gc.collect()
    process.wait_for_everyone()
    if process.is_main_process:
        if peft_config is not None:  # a full model: it samples the next iteration and is its reference
            merge_adapter(policy, adapter, staging, policy_loading)
            processor.save_pretrained(str(staging))  # save_model saved it beside the adapter
            shutil.rmtree(adapter)
        copy_custom_code(policy, staging)  # a model with its own code (trust_remote_code) loads only with it
        (staging / TRAINING_ARGS_NAME).unlink(missing_ok=True)  # a pickle: the model card lists the settings
        move_into_place(staging, target)
    process.wait_for_everyone()
    return metrics


def merge_adapter(base: str, adapter: Path, output: Path, loading: ModelLoading) -> None:
    """Merge a LoRA adapter into its base model, loaded unquantized in the policy's dtype, and save the result."""
    from peft import PeftModel

    full = dataclasses.replace(loading, load_in_4bit=False, load_in_8bit=False)
    model = AutoModelForImageTextToText.from_pretrained(base, **full.model_kwargs())
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(output))
    del model, merged
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
