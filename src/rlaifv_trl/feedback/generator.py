"""`RLAIFVFeedbackGenerator`: a prompt dataset and a policy in, a TRL-ready preference dataset out.

It puts together the models of each role (`roles`), the jobs on their backends (`backend_factory`), the stages in memory
(`FeedbackPipeline`) and their saved, resumable, distributed run (`FeedbackRunner`).
"""

from __future__ import annotations

import dataclasses
import os

from datasets import Dataset
from transformers import PreTrainedModel, ProcessorMixin

from ..loading import ModelLoading
from ..manifest import ManifestSection
from ..validation import RowValidation
from .backend_factory import process_state
from .claims import ClaimSplitter, QuestionWriter
from .config import FeedbackConfig
from .merge import FeedbackOutput
from .pipeline import FeedbackPipeline
from .roles import feedback_models
from .runner import FeedbackRunner


class RLAIFVFeedbackGenerator:
    """Turns (image(s), prompt) rows and a policy into RLAIF-V preference pairs.

    Args:
        model: The policy, an `AutoModelForImageTextToText` model or its name/path.
        processor: The policy's processor; loaded from the model's name/path when omitted.
        args: The configuration (default `FeedbackConfig()`).
        labeler_model: The labeler VLM or its name/path; defaults to `args.labeler_model_name_or_path`, else the
            policy itself (self-feedback).
        labeler_processor: The labeler's processor (when `labeler_model` is an object).
        claim_splitter: A claim splitter; defaults to the language model of `args.splitter_model_name_or_path`, else
            `RuleBasedClaimSplitter`.
        question_writer: A question writer; defaults to the language model of
            `args.question_writer_model_name_or_path` (or of the splitter), else `RuleBasedQuestionWriter`.
        policy_loading: How a policy given by name is loaded (revision, dtype, quantization, ...); the labeler and
            the splitter are loaded with the `labeler_*` and `splitter_*` options of `args`.
        validation: What rows may contain (where image paths may be read from, image and prompt size caps). Rows
            that break it are skipped with a code and counted in the report; with `validation.strict` (or
            `args.strict_rows`) the first one raises instead.

    Example:

    ```python
    from rlaifv_trl import FeedbackConfig, RLAIFVFeedbackGenerator
    from rlaifv_testbed import prompt_dataset

    generator = RLAIFVFeedbackGenerator("path/to/policy", args=FeedbackConfig(num_candidates=8))
    output = generator.generate(prompt_dataset(100), output_dir="feedback/iteration-1")
    output.preference  # prompt, images, chosen, rejected + provenance: ready for trl.DPOTrainer
    ```
    """

    def __init__(
        self,
        model: PreTrainedModel | str,
        processor: ProcessorMixin | None = None,
        args: FeedbackConfig | None = None,
        labeler_model: PreTrainedModel | str | None = None,
        labeler_processor: ProcessorMixin | None = None,
        claim_splitter: ClaimSplitter | None = None,
        question_writer: QuestionWriter | None = None,
        policy_loading: ModelLoading | None = None,
        validation: RowValidation | None = None,
    ):
        self.args = args = args or FeedbackConfig()
        self.validation = validation or RowValidation()
        if args.strict_rows and not self.validation.strict:
            self.validation = dataclasses.replace(self.validation, strict=True)
        self.state = process_state()
        policy, labeler = feedback_models(
            args, model, processor, labeler_model, labeler_processor, policy_loading or ModelLoading()
        )
        self.model, self.processor = policy.model, policy.processor
        self.labeler_model, self.labeler_processor = labeler.model, labeler.processor
        self.pipeline = FeedbackPipeline.from_models(
            args, policy, labeler, claim_splitter, question_writer, self.validation, self.state
        )
        self.sampler, self.labeler = self.pipeline.sampler, self.pipeline.labeler
        self.claim_splitter, self.question_writer = self.pipeline.claim_splitter, self.pipeline.question_writer
        self.provenance = self.pipeline.provenance

    def generate(
        self,
        dataset: Dataset,
        output_dir: str | os.PathLike | None = None,
        *,
        seed: int = 42,
        iteration: int = 1,
        overwrite_output_dir: bool = False,
        disable_tqdm: bool = False,
        strict: bool | None = None,
        section: ManifestSection | None = None,
    ) -> FeedbackOutput:
        """Run every stage on `dataset` (columns `prompt`, `images` or `image` and/or `videos`, optional
        `prompt_id`).

        Args:
            dataset: The (image(s), prompt) rows. With a `videos` column (a list of videos per row, each a list of
                frames) rows may be video prompts; the preference and rankings datasets then have a `videos` column
                too. Videos need the transformers backends and processors with a video processor.
            output_dir: Folder for the stage shards, the final datasets (`preference/`, `audit/`, `rankings/`) and
                `report.json`.
                Running again with the same folder resumes: finished shards are not recomputed, and a run with other
                settings is refused (`manifest.json` records them). Only one run may use a folder at a time.
                `None` uses a temporary folder that is removed at the end (no resume).
            seed: Base seed. Each prompt gets its own seeds, derived from `seed` and its prompt id, so results do not
                depend on the order of the prompts, on sharding or on the number of processes.
            iteration: Iteration of the RLAIF-V loop (from 1), recorded in the output.
            overwrite_output_dir: Delete the results of an earlier run in `output_dir` whose settings differ, instead
                of raising.
            disable_tqdm: Hide the progress bars (shown on the main process only).
            strict: Raise `BadRowError`, naming the row, on the first unusable row instead of skipping it; `None`:
                as the generator's `validation.strict`.
            section: For a run inside a larger run's folder whose lock the caller holds (the recipe's): the section
                of that folder's manifest where this run's settings are recorded and checked, instead of a lock and
                a `manifest.json` of its own in `output_dir`.
        """
        return FeedbackRunner(self.pipeline, self.state).run(
            dataset, output_dir, seed=seed, iteration=iteration, overwrite_output_dir=overwrite_output_dir,
            disable_tqdm=disable_tqdm, strict=strict, section=section,
        )  # fmt: skip

    def close_engines(self) -> None:
        """Stop the vLLM engines this generator started (they start again when needed)."""
        self.pipeline.close_engines()


__all__ = ["FeedbackOutput", "RLAIFVFeedbackGenerator"]
