"""An iteration's preference data: generated feedback (and published pairs), then the reference log-probs, written
as the iteration's config of the run's dataset; generated feedback's rankings are written as its rankings config."""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path
from typing import Any

from datasets import Dataset, concatenate_datasets, load_from_disk

from ..artifacts import write_iteration_dataset
from ..atomic_io import atomic_directory
from ..cards import IterationStats, public_name
from ..data import load_preference_dataset
from ..feedback import FeedbackConfig, RLAIFVFeedbackGenerator
from ..feedback.pairs import num_words
from ..feedback.report import RunReport
from ..loading import ModelLoading, load_vlm
from ..trainer import RLAIFVDPOConfig, precompute_ref_log_probs
from ..trainer.collator import trainable_rows
from ..trainer.reference_logps import mixed_precision_dtype
from ..validation import RowValidation
from .arguments import IterativeDPOArguments
from .prompts import iteration_prompts
from .run import RecipeRun


def collect_preferences(
    run: RecipeRun,
    iteration: int,
    script_args: IterativeDPOArguments,
    feedback_args: FeedbackConfig,
    training_args: RLAIFVDPOConfig,
    policy_loading: ModelLoading,
    row_validation: RowValidation,
) -> dict[str, Any]:
    """Sample from the policy of `iteration - 1`, divide, conquer and pair on this iteration's prompts (or take
    published pairs for iteration 1 when a seed dataset is given), mix in published pairs if asked, and save the pairs
    (and, for generated feedback, the rankings as the iteration's `iteration-<k>-rankings` config). Returns the
    iteration's statistics.
    """
    rankings = None
    folder = run.feedback_dir(iteration)
    if iteration == 1 and script_args.seed_preference_dataset:
        source = script_args.seed_preference_dataset
        pairs = published_pairs(
            source, script_args.preference_dataset_config, 1, script_args.prompts_per_iteration, row_validation
        )
        stats = _stats(pairs, iteration, policy=source, labeler="published", report=None)
    else:
        if feedback_args.sampling_backend == "vllm":  # vLLM loads the policy itself
            model, processor = run.policy(iteration - 1), None
        else:
            model, processor = load_vlm(run.policy(iteration - 1), policy_loading)
        source = Path(script_args.prompt_dataset)
        validation = row_validation.rooted_at(source if source.is_dir() else None)  # paths: inside its folder
        generator = RLAIFVFeedbackGenerator(
            model, processor, args=feedback_args, validation=validation, policy_loading=policy_loading
        )
        prompts = iteration_prompts(
            script_args.prompt_dataset, iteration, script_args.prompts_per_iteration,
            script_args.prompt_dataset_split, script_args.prompt_dataset_config, seed=training_args.seed,
        )  # fmt: skip
        output = generator.generate(
            prompts, folder, seed=training_args.seed, iteration=iteration, disable_tqdm=training_args.disable_tqdm,
            section=run.section(iteration, "feedback"),  # the run holds the folder's lock and its manifest
        )  # fmt: skip
        policy = run.policy_name(iteration - 1)
        labeler = public_name(feedback_args.labeler_model_name_or_path or policy)
        names = {"policy_model": policy, "labeler_model": labeler}
        pairs = output.preference.map(lambda _: names, desc="Naming the models")
        rankings = output.rankings.map(lambda _: names, desc="Naming the models")
        stats = _stats(pairs, iteration, policy=policy, labeler=labeler, report=output.report)
        del model, generator
        gc.collect()
    if script_args.mix_preference_dataset and script_args.mix_pairs_per_iteration:
        mixed = published_pairs(
            script_args.mix_preference_dataset, script_args.preference_dataset_config, iteration,
            script_args.mix_pairs_per_iteration, row_validation,
        )  # fmt: skip
        pairs = _concatenate_aligned(pairs, mixed)
        stats["num_pairs"] = len(pairs)
    if len(pairs) == 0:
        raise RuntimeError(
            f"Iteration {iteration} produced no preference pair (see {folder / 'report.json'}): the policy's answers "
            "to each prompt all got the same score. Sample more candidates or prompts, or lower min_score_gap."
        )
    if run.process.is_main_process:
        with atomic_directory(folder / "pairs") as scratch:
            pairs.save_to_disk(str(scratch))
        if rankings is not None:
            write_iteration_dataset(rankings, run.root, iteration, rankings=True)
    return stats


def add_reference_log_probs(
    run: RecipeRun,
    iteration: int,
    training_args: RLAIFVDPOConfig,
    policy_loading: ModelLoading,
    row_validation: RowValidation,
) -> dict[str, Any]:
    """Write the iteration's trainable pairs as its config of the run's dataset; with `precompute_ref_log_probs`
    (the paper's way), with their reference log-probs under the policy that starts the iteration, that of
    `iteration - 1` (every process computes its share). Without it, training runs the reference model on every batch
    instead. Pairs DPO cannot train on (e.g. an answer `max_length` would cut away) are left out and counted."""
    pairs = load_from_disk(str(run.feedback_dir(iteration) / "pairs"))
    model, processor = load_vlm(run.policy(iteration - 1), policy_loading)
    pairs, report = trainable_rows(
        pairs, processor, training_args.max_length, row_validation, row_validation.strict,
        f"iteration {iteration} pairs",
    )  # fmt: skip
    if training_args.precompute_ref_log_probs:
        batch_size = training_args.precompute_ref_batch_size or training_args.per_device_train_batch_size
        pairs = precompute_ref_log_probs(
            model, processor, pairs, batch_size=batch_size, max_length=training_args.max_length,
            autocast_dtype=mixed_precision_dtype(training_args),
        )  # fmt: skip
    del model
    gc.collect()
    if run.process.is_main_process:
        write_iteration_dataset(pairs, run.root, iteration)
    return {"num_pairs": len(pairs), "num_skipped": report.num_skipped, "skipped_by_code": report.by_code()}


def published_pairs(name: str, config: str | None, iteration: int, count: int, validation: RowValidation) -> Dataset:
    """`count` usable pairs of a published preference dataset, a different slice for every iteration (from 1,
    wrapping around); its unusable rows are left out (`load_preference_dataset`), or with `validation.strict` the
    first one raises."""
    dataset = load_preference_dataset(name, name=config, validation=validation, strict=validation.strict)
    start = ((iteration - 1) * count) % max(len(dataset), 1)
    return dataset.select([(start + i) % len(dataset) for i in range(min(count, len(dataset)))])


def _stats(pairs: Dataset, iteration: int, policy: str, labeler: str, report: RunReport | None) -> dict[str, Any]:
    chosen = [num_words(row[0]["content"][0]["text"]) for row in pairs["chosen"]] or [0]
    rejected = [num_words(row[0]["content"][0]["text"]) for row in pairs["rejected"]] or [0]
    stats = IterationStats(
        iteration=iteration,
        policy=policy,
        labeler=labeler,
        num_prompts=report.num_prompts if report else len(pairs),
        num_candidates=report.num_candidates if report else 2 * len(pairs),
        num_claims=report.num_claims if report else 0,
        num_rejected_claims=report.num_rejected_claims if report else 0,
        num_pairs=len(pairs),
        chosen_mean_words=sum(chosen) / len(chosen),
        rejected_mean_words=sum(rejected) / len(rejected),
        num_skipped=len(report.skipped) if report else 0,
    )
    return dataclasses.asdict(stats)


def _concatenate_aligned(generated: Dataset, published: Dataset) -> Dataset:
    """Generated and published pairs in one dataset: the published rows get empty provenance columns."""
    published = published.select_columns([c for c in published.column_names if c in generated.column_names])
    for column in generated.column_names:
        if column not in published.column_names:
            published = published.add_column(column, [None] * len(published))
    published = published.cast(generated.features)
    return concatenate_datasets([generated, published.select_columns(generated.column_names)])
