"""The pairs stage: the stage payloads of every batch of rows joined into each prompt's result and counted in the
run report, then scores, rankings, pairs and length balancing, and the preference, audit and rankings datasets.

A batch is a shard of a saved run (`FeedbackRunner`) or all the rows of an in-memory one (`FeedbackPipeline.run`):
both give the same output.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from ..validation import RowValidation
from ..validation.images import stored_image
from ..validation.rows import row_image_values, row_video_values
from .config import FeedbackConfig
from .inputs import FeedbackInputs, prompt_feature, raw_rows
from .outputs import PromptResult, audit_dataset, preference_dataset, rankings_dataset, select_pairs
from .report import RunReport


logger = logging.getLogger(__name__)


@dataclass
class FeedbackOutput:
    """The result of a feedback run.

    Attributes:
        preference: TRL conversational vision preference dataset with provenance columns.
        audit: One row per candidate answer with its claims, questions, probabilities, verdicts, score and rank.
        report: Counts per stage, rows without output and why, timings.
        output_dir: Where the shards, datasets and report are saved (None for a temporary run).
        rankings: One row per prompt with all its candidates, their scores and their ranking as tie groups (columns
            in `rlaifv_trl.feedback.outputs`).
    """

    preference: Dataset
    audit: Dataset
    report: RunReport
    output_dir: Path | None
    rankings: Dataset


def prompt_results(
    batches: Iterable[dict[str, dict[str, Any]]], report: RunReport, confirmed_claim_weight: float = 0.0
) -> list[PromptResult]:
    """The results of the prompts that went through every stage, from the stage payloads of each batch (in stage
    order), scored with `confirmed_claim_weight` (see `answer_score`); the batches' skipped rows, timings and counts
    go to `report`."""
    results = []
    for payloads in batches:
        for stage, payload in payloads.items():
            report.skipped += payload["skipped"]
            report.seconds[stage] = report.seconds.get(stage, 0.0) + payload["seconds"]
        report.num_question_writer_fallbacks += payloads["claims"]["question_writer_fallbacks"]
        report.num_labeler_full_forwards += payloads["labels"]["full_forwards"]
        report.num_prompts += len(payloads["candidates"]["records"])
        claims = {record["row"]: record for record in payloads["claims"]["records"]}
        labels = {record["row"]: record for record in payloads["labels"]["records"]}
        for record in payloads["candidates"]["records"]:
            row = record["row"]
            if row in claims and row in labels:
                results.append(
                    PromptResult(
                        row=row,
                        prompt_id=record["prompt_id"],
                        seed=record["seed"],
                        prompt=record["prompt"],
                        instruction=record["instruction"],
                        answers=record["answers"],
                        claims=claims[row]["claims"],
                        questions=claims[row]["questions"],
                        p_yes=labels[row]["p_yes"],
                        p_no=labels[row]["p_no"],
                        confirmed_claim_weight=confirmed_claim_weight,
                    )
                )
    report.skipped.sort(key=lambda entry: entry["row"])
    for result in results:
        report.num_candidates += len(result.answers)
        report.num_empty_answers += sum(not answer.strip() for answer in result.answers)
        report.num_answers_without_claims += sum(
            bool(answer.strip()) and not claims for answer, claims in zip(result.answers, result.claims)
        )
        report.num_claims += sum(len(claims) for claims in result.claims)
        report.num_rejected_claims += sum(not ok for verdicts in result.verdicts for ok in verdicts)
        report.num_scored_answers += sum(score is not None for score in result.scores)
    return results


def feedback_output(
    inputs: FeedbackInputs,
    results: list[PromptResult],
    report: RunReport,
    args: FeedbackConfig,
    validation: RowValidation,
    provenance: dict[str, str],
) -> FeedbackOutput:
    """Pairs from the prompts' results, and the preference, audit and rankings datasets (`output_dir` None)."""
    start = time.perf_counter()
    selection = select_pairs(
        results,
        args.min_score_gap,
        args.pairs_per_prompt,
        args.length_balancing,
        args.length_balancing_step,
        inputs.seed,
        args.max_confirmed_claim_drop,
        args.max_claim_drop,
    )
    report.num_possible_pairs = selection.num_possible
    report.num_sampled_pairs = selection.num_sampled
    report.num_pairs = len(selection.pairs)
    report.length_balance_ratio = selection.ratio
    report.length_gap_before, report.length_gap_after = selection.gap_before, selection.gap_after
    report.rows_without_pairs = selection.rows_without_pairs

    images, videos = _stored_visuals(inputs, sorted({result.row for result in results}), validation)
    feature = prompt_feature(inputs.dataset)
    preference = preference_dataset(selection.pairs, images, feature, inputs.iteration, provenance, videos)
    audit = audit_dataset(results, selection.pairs, inputs.iteration, provenance)
    rankings = rankings_dataset(results, images, feature, inputs.iteration, provenance, videos)
    report.seconds["pairs"] = time.perf_counter() - start
    logger.info(
        "RLAIF-V feedback: %d prompts, %d candidates, %d claims (%d rejected), %d pairs; %d rows skipped, "
        "%d without pairs",
        report.num_prompts,
        report.num_candidates,
        report.num_claims,
        report.num_rejected_claims,
        report.num_pairs,
        len(report.skipped),
        len(report.rows_without_pairs),
    )
    return FeedbackOutput(preference, audit, report, None, rankings)


def _stored_visuals(
    inputs: FeedbackInputs, rows: list[int], validation: RowValidation
) -> tuple[dict[int, list], dict[int, list] | None]:
    """The original bytes of the images (and of every video frame) of `rows`, as the output datasets store them."""
    images, videos = {}, {} if inputs.video_column else None
    for row in rows:
        raw = raw_rows(inputs.dataset, row, row + 1)[0]
        values = raw.get(inputs.column) if inputs.column else None
        if inputs.video_column is None or values:
            values = row_image_values(values, inputs.column)
        images[row] = [stored_image(value, validation, inputs.column) for value in values or []]
        if videos is not None:
            column = inputs.video_column
            videos[row] = [
                [stored_image(frame, validation, column) for frame in video]
                for video in row_video_values(raw.get(column), column)
            ]
    return images, videos
