"""`FeedbackPipeline`: the feedback of RLAIF-V on rows in memory, with no file, lock or process group.

Stages, each over a batch of rows (a shard, when `FeedbackRunner` saves and resumes them):

1. `candidates`: check each row (unusable rows are skipped with a reason), then sample `num_candidates` answers per
   prompt in one batched `generate` call seeded with the prompt's own seed;
2. `claims`: split every answer into claims and write one polar question per claim;
3. `labels`: p_yes and p_no of every question from the labeler (the image prefix encoded once per prompt);

then the pairs stage (`rlaifv_trl.feedback.merge`): scores, rankings, pairs and length balancing, and the preference,
audit and rankings datasets. Each stage's output is a JSON-ready payload, `{"records": [...], "skipped": [...], ...}`:
a row that fails in a stage is skipped with a code and counted, the others go on. Every random draw is seeded per
prompt, so the output does not depend on how the rows are batched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from accelerate import PartialState
from datasets import Dataset

from ..cards import public_name
from ..validation import BadRow, BadRowError, RowValidation, check_visual_prompt_row, row_images, row_videos
from ..video import require_video_support
from ..vllm_backend.vllm_engine import VLLMEngineError
from ..vllm_backend.vllm_feedback import LazyEngine, VLLMCandidateSampler, VLLMYesNoLabeler
from .backend_factory import make_labeler, make_sampler, make_splitter, process_state
from .claims import ClaimSplitter, QuestionWriter, with_instruction
from .config import FeedbackConfig
from .inputs import FeedbackInputs, instruction_text
from .labeler import LabelGroup, YesNoLabeler
from .merge import FeedbackOutput, feedback_output, prompt_results
from .report import RunReport
from .roles import VisionModel
from .sampling import CandidateSampler, derive_seed


logger = logging.getLogger(__name__)

STAGES = ("candidates", "claims", "labels")


def _ignore(count: int) -> None:
    """No progress bar."""


class FeedbackPipeline:
    """Sample -> divide -> label -> pairs on rows in memory.

    Args:
        sampler: Samples the candidates (`CandidateSampler` or `VLLMCandidateSampler`).
        claim_splitter: Splits answers into claims.
        question_writer: Turns claims into polar questions.
        labeler: Answers the questions (`YesNoLabeler` or `VLLMYesNoLabeler`).
        args: The configuration.
        validation: What rows may contain; with `validation.strict` the first unusable row raises.
        provenance: The names of the `policy_model`, `labeler_model`, `claim_splitter` and `question_writer`, for the
            output's provenance columns.

    Example:

    ```python
    pipeline = RLAIFVFeedbackGenerator("path/to/policy", args=FeedbackConfig()).pipeline
    output = pipeline.run(prompts, seed=42)  # a FeedbackOutput; nothing is written
    candidates = pipeline.sample(pipeline.inputs(prompts, seed=42, iteration=1), 0, 8)  # one stage, rows 0 to 7
    ```
    """

    def __init__(
        self,
        sampler: CandidateSampler | VLLMCandidateSampler,
        claim_splitter: ClaimSplitter,
        question_writer: QuestionWriter,
        labeler: YesNoLabeler | VLLMYesNoLabeler,
        args: FeedbackConfig,
        validation: RowValidation,
        provenance: dict[str, str],
    ):
        self.sampler, self.labeler = sampler, labeler
        self.claim_splitter, self.question_writer = claim_splitter, question_writer
        self.args, self.validation, self.provenance = args, validation, provenance
        self.tokenizer = getattr(sampler.processor, "tokenizer", sampler.processor)  # for the prompt checks

    @classmethod
    def from_models(
        cls,
        args: FeedbackConfig,
        policy: VisionModel,
        labeler: VisionModel,
        claim_splitter: ClaimSplitter | None = None,
        question_writer: QuestionWriter | None = None,
        validation: RowValidation | None = None,
        state: PartialState | None = None,
    ) -> FeedbackPipeline:
        """The pipeline of a policy and a labeler (`rlaifv_trl.feedback.roles`), each job on the backend `args`
        names; the splitter and question writer default to those `args` names."""
        state = state or process_state()
        claim_splitter, question_writer = make_splitter(args, state, claim_splitter, question_writer)
        provenance = {
            "policy_model": policy.name,
            "labeler_model": labeler.name,
            "claim_splitter": public_name(claim_splitter.name),
            "question_writer": public_name(question_writer.name),
        }
        sampler = make_sampler(args, policy, state)
        return cls(
            sampler, claim_splitter, question_writer, make_labeler(args, labeler, state), args,
            validation or RowValidation(), provenance,
        )  # fmt: skip

    # -- the whole run in memory ---------------------------------------------------------------------------------------

    def run(
        self, dataset: Dataset, *, seed: int = 42, iteration: int = 1, strict: bool | None = None
    ) -> FeedbackOutput:
        """Every stage on all the rows of `dataset` (see `RLAIFVFeedbackGenerator.generate`), in memory.
        `strict` (default: `validation.strict`) raises on the first unusable row."""
        inputs = self.inputs(dataset, seed, iteration, strict)
        payloads = {}
        for stage in STAGES:
            start = time.perf_counter()
            try:
                payloads[stage] = self.run_stage(stage, inputs, 0, len(dataset), payloads)
            finally:
                self.close_engines()
            payloads[stage]["seconds"] = time.perf_counter() - start
        return self.output(inputs, [payloads], RunReport(num_rows=len(dataset)))

    def inputs(self, dataset: Dataset, seed: int, iteration: int, strict: bool | None = None) -> FeedbackInputs:
        """The stages' view of `dataset`, checked: its columns, and for videos the backends and processors."""
        inputs = FeedbackInputs.of(dataset, seed, iteration, self.validation.strict if strict is None else strict)
        if inputs.video_column is not None:  # video prompts run on the transformers backends
            for role, backend in (("policy", "sampling_backend"), ("labeler", "labeler_backend")):
                if getattr(self.args, backend) != "transformers":
                    raise ValueError(f"Video prompts need {backend}='transformers' (the {role} runs on vLLM)")
            require_video_support(self.sampler.processor, "policy")
            require_video_support(self.labeler.processor, "labeler")
        return inputs

    def output(self, inputs: FeedbackInputs, batches: list[dict[str, dict]], report: RunReport) -> FeedbackOutput:
        """The pairs stage on the stage payloads of every batch of rows."""
        results = prompt_results(batches, report, self.args.confirmed_claim_weight)
        return feedback_output(inputs, results, report, self.args, self.validation, self.provenance)

    def engines(self, stage: str | None = None) -> list[LazyEngine]:
        """The vLLM engines of `stage`'s jobs (of every stage: `None`)."""
        runners = [getattr(part, "runner", None) for part in (self.claim_splitter, self.question_writer)]
        parts = {"candidates": [self.sampler], "claims": runners, "labels": [self.labeler]}
        chosen = [part for name in STAGES if stage in (None, name) for part in parts[name]]
        return [part for part in chosen if isinstance(part, LazyEngine)]

    def close_engines(self) -> None:
        """Stop the vLLM engines of the pipeline's jobs (they start again when needed)."""
        for engine in self.engines():
            engine.close()

    # -- stages --------------------------------------------------------------------------------------------------------

    def run_stage(
        self,
        stage: str,
        inputs: FeedbackInputs,
        start: int,
        stop: int,
        earlier: dict[str, dict[str, Any]],
        advance: Callable[[int], None] = _ignore,
    ) -> dict[str, Any]:
        """The payload of `stage` on rows `start:stop`, given the payloads of the stages before it on those rows;
        `advance(n)` is called as rows are done."""
        if stage == "candidates":
            return self.sample(inputs, start, stop, advance)
        if stage == "claims":
            return self.divide(inputs, earlier["candidates"], advance)
        if stage == "labels":
            return self.label(inputs, start, stop, earlier["candidates"], earlier["claims"], advance)
        raise ValueError(f"Unknown stage {stage!r}; expected one of {STAGES}")

    def sample(
        self, inputs: FeedbackInputs, start: int, stop: int, advance: Callable[[int], None] = _ignore
    ) -> dict[str, Any]:
        """Check rows `start:stop` and sample the candidates of the usable ones."""
        ready, skipped = [], []
        for index, row in enumerate(inputs.rows(start, stop), start):
            prompt_id = inputs.ids[index]
            try:
                if prompt_id is None:
                    raise BadRow("id.missing", "no prompt id", "prompt_id")
                if index in inputs.duplicates:
                    first = inputs.duplicates[index]
                    raise BadRow("id.duplicate", f"the prompt id of row {first} too", "prompt_id")
                prompt, images, videos = check_visual_prompt_row(
                    row, inputs.column, inputs.video_column, self.validation, self.tokenizer
                )
                seed = derive_seed(inputs.seed, prompt_id, "candidates")
                ready.append(
                    {"row": index, "prompt_id": prompt_id, "seed": seed, "prompt": prompt, "images": images,
                     "videos": videos}
                )  # fmt: skip
            except BadRow as problem:
                if inputs.strict:
                    raise BadRowError("RLAIFVFeedbackGenerator", index, prompt_id, problem) from None
                skipped.append(_skip(index, prompt_id, "input", problem))
                advance(1)
        records = []
        size = self.args.sampling_batch_size
        for batch in (ready[i : i + size] for i in range(0, len(ready), size)):
            for item, answers in zip(batch, self._sample(batch, skipped)):
                if answers is not None:
                    records.append(
                        {
                            "row": item["row"],
                            "prompt_id": item["prompt_id"],
                            "seed": item["seed"],
                            "prompt": item["prompt"],
                            "instruction": instruction_text(item["prompt"]),
                            "answers": answers,
                        }
                    )
            advance(len(batch))
        records.sort(key=lambda record: record["row"])
        return {"records": records, "skipped": skipped}

    def _sample(self, batch: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> list[list[str] | None]:
        """The candidates of a batch of prompts from one generate call; if it fails, prompt by prompt, so that only
        the rows that fail on their own are skipped (`None`)."""
        videos = [item["videos"] for item in batch]
        try:
            return self.sampler.sample_batch(
                [item["prompt"] for item in batch],
                [item["images"] for item in batch],
                [item["seed"] for item in batch],
                **({"videos": videos} if any(videos) else {}),
            )
        except VLLMEngineError:
            raise
        except Exception as error:
            if len(batch) == 1:
                skipped.append(_failure(batch[0]["row"], batch[0]["prompt_id"], "candidates", error))
                return [None]
        return [self._sample([item], skipped)[0] for item in batch]

    def divide(
        self, inputs: FeedbackInputs, candidates: dict[str, Any], advance: Callable[[int], None] = _ignore
    ) -> dict[str, Any]:
        """The claims of every sampled answer and one polar question per claim.

        A splitter and question writer with `split_groups`/`write_groups` (the language-model ones) get all the
        records at once, which a vLLM runner sends to its engine together (same seeds, same output as record by
        record); if that fails, the records go one at a time, so that only those that fail on their own are
        skipped."""
        fallbacks_before = getattr(self.question_writer, "num_fallbacks", 0)
        records, skipped = self._divide_together(inputs, candidates["records"], advance), []
        if records is None:
            records = []
            for record in candidates["records"]:
                try:
                    records.append(self._divide_records(inputs, [record])[0])
                except VLLMEngineError:
                    raise
                except Exception as error:
                    skipped.append(_failure(record["row"], record["prompt_id"], "claims", error))
                advance(1)
        fallbacks = getattr(self.question_writer, "num_fallbacks", 0) - fallbacks_before
        return {"records": records, "skipped": skipped, "question_writer_fallbacks": fallbacks}

    def _divide_together(
        self, inputs: FeedbackInputs, records: list[dict[str, Any]], advance: Callable[[int], None]
    ) -> list[dict[str, Any]] | None:
        """`_divide_records` of every record at once, or None when the splitter cannot or it failed."""
        together = hasattr(self.claim_splitter, "split_groups") and hasattr(self.question_writer, "write_groups")
        if not together or len(records) < 2:
            return None
        fallbacks = getattr(self.question_writer, "num_fallbacks", 0)
        try:
            divided = self._divide_records(inputs, records)
        except VLLMEngineError:
            raise
        except Exception as error:
            logger.warning(
                "Dividing %d records together failed (%s); dividing them one at a time", len(records), error
            )
            if hasattr(self.question_writer, "num_fallbacks"):
                self.question_writer.num_fallbacks = fallbacks  # the records' second pass counts them again
            return None
        advance(len(records))
        return divided

    def _divide_records(self, inputs: FeedbackInputs, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Claims and questions of `records`: one `split`/`write` per record, or one `split_groups`/`write_groups`
        for several."""
        split_seeds = [derive_seed(inputs.seed, record["prompt_id"], "claims") for record in records]
        groups = [
            ([record["instruction"]] * len(record["answers"]), record["answers"], seed)
            for record, seed in zip(records, split_seeds)
        ]
        if len(records) == 1:
            claims = [self.claim_splitter.split(*groups[0])]
        else:
            claims = self.claim_splitter.split_groups(groups)
        flats = [[claim for answer_claims in record_claims for claim in answer_claims] for record_claims in claims]
        seeds = [derive_seed(inputs.seed, record["prompt_id"], "questions") for record in records]
        if len(records) == 1:
            written = [self.question_writer.write(flats[0], seeds[0]) if flats[0] else []]
        else:
            written = self.question_writer.write_groups(list(zip(flats, seeds)))
        instruction = self.args.yes_no_instruction
        divided = []
        for record, record_claims, questions in zip(records, claims, written):
            remaining = iter(questions)
            divided.append(
                {
                    "row": record["row"],
                    "claims": record_claims,
                    "questions": [[with_instruction(next(remaining), instruction) for _ in c] for c in record_claims],
                }
            )
        return divided

    def label(
        self,
        inputs: FeedbackInputs,
        start: int,
        stop: int,
        candidates: dict[str, Any],
        claims: dict[str, Any],
        advance: Callable[[int], None] = _ignore,
    ) -> dict[str, Any]:
        """p_yes and p_no of every question of the rows `start:stop` (the image prefix encoded once per prompt)."""
        prompt_ids = {record["row"]: record["prompt_id"] for record in candidates["records"]}
        rows = inputs.rows(start, stop)
        records, skipped = [], []
        full_before = self.labeler.num_full_forwards
        for record in claims["records"]:
            try:
                images, videos = self._visuals(rows[record["row"] - start], inputs)
                flat = [question for questions in record["questions"] for question in questions]
                labels = iter(self.labeler.label_group(LabelGroup(images, flat, videos)))
                pairs = [[next(labels) for _ in questions] for questions in record["questions"]]
                records.append(
                    {
                        "row": record["row"],
                        "p_yes": [[label.p_yes for label in answer] for answer in pairs],
                        "p_no": [[label.p_no for label in answer] for answer in pairs],
                    }
                )
            except VLLMEngineError:
                raise
            except Exception as error:
                skipped.append(_failure(record["row"], prompt_ids[record["row"]], "labels", error))
            advance(1)
        return {"records": records, "skipped": skipped, "full_forwards": self.labeler.num_full_forwards - full_before}

    def _visuals(self, row: dict[str, Any], inputs: FeedbackInputs) -> tuple[list, list]:
        """A checked row's decoded images and videos."""
        if inputs.video_column is None:
            return row_images(row.get(inputs.column), inputs.column, self.validation), []
        value = row.get(inputs.column) if inputs.column else None
        images = row_images(value, inputs.column, self.validation) if value else []
        return images, row_videos(row.get(inputs.video_column), inputs.video_column, self.validation)


def _skip(row: int, prompt_id: str | None, stage: str, problem: BadRow) -> dict[str, Any]:
    logger.debug("Skipping row %d (%s): [%s] %s", row, stage, problem.code, problem)
    return {
        "row": row, "prompt_id": prompt_id, "stage": stage, "code": problem.code, "field": problem.field,
        "reason": str(problem),
    }  # fmt: skip


def _failure(row: int, prompt_id: str | None, stage: str, error: Exception) -> dict[str, Any]:
    debug = logger.isEnabledFor(logging.DEBUG)
    logger.warning("Row %d failed in stage %s: %s: %s", row, stage, type(error).__name__, error, exc_info=debug)
    return _skip(row, prompt_id, stage, BadRow("stage.failed", f"{stage} failed: {type(error).__name__}: {error}"))
