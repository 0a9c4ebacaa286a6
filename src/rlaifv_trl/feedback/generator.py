"""`RLAIFVFeedbackGenerator`: a prompt dataset and a policy in, a TRL-ready preference dataset out.

Stages, each run shard by shard and saved atomically under `output_dir` (a rerun skips finished shards):

1. `candidates`: check each row (unusable rows are skipped with a reason), then sample `num_candidates` answers per
   prompt in one batched `generate` call seeded with the prompt's own seed;
2. `claims`: split every answer into claims and write one polar question per claim;
3. `labels`: p_yes and p_no of every question from the labeler (the image prefix encoded once per prompt);

then, on the main process, scores, rankings, pairs and length balancing, and the preference, audit and rankings
datasets.
Under `torchrun` / `accelerate launch` the shards are spread over the processes (shard i on process i mod N) and the
main process merges them; since every random draw is seeded per prompt, the output does not depend on N.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset, load_from_disk
from tqdm.auto import tqdm
from transformers import PreTrainedModel, ProcessorMixin

from ..atomic_io import atomic_directory, remove_temporary_files
from ..backends.vllm_engine import VLLMEngineError
from ..backends.vllm_feedback import LazyEngine, VLLMCausalLMRunner
from ..cards import public_name
from ..compatibility import check_vision_language_model
from ..loading import ModelLoading, load_causal_lm, load_vlm
from ..manifest import Manifest, ResultSettings, result_settings
from ..run_lock import RunLock
from ..validation import BadRow, BadRowError, RowValidation, check_visual_prompt_row, row_images, row_videos
from ..validation.images import stored_image
from ..validation.rows import row_image_values, row_video_values
from ..video import require_video_support
from .backends import require_model_name, vllm_labeler, vllm_runner, vllm_sampler, vlm_processor
from .claims import ClaimSplitter, QuestionWriter, with_instruction
from .config import FeedbackConfig
from .inputs import instruction_text, prompt_feature, prompt_ids, raw_rows, visual_columns
from .labeler import LabelGroup, YesNoLabeler
from .llm_claims import CausalLMRunner, LLMClaimSplitter, LLMQuestionWriter
from .outputs import PromptResult, audit_dataset, preference_dataset, rankings_dataset, select_pairs
from .report import RunReport
from .rules import RuleBasedClaimSplitter, RuleBasedQuestionWriter
from .sampling import CandidateSampler, derive_seed
from .shards import STAGES, ShardStore


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


def process_state() -> PartialState:
    """Accelerate's process state. Processes launched on a machine without accelerator (e.g. `torchrun` on CPUs)
    are distributed too, over gloo: accelerate only treats them so when asked for CPU explicitly."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return PartialState(cpu=launched and not torch.accelerator.is_available())


def model_id(model: PreTrainedModel) -> str:
    """A name for a model in the provenance columns: its Hub id, "local: <folder>" for a local path, else its class.

    Provenance columns are published with the data, so they never hold local paths.
    """
    name = getattr(model.config, "_name_or_path", "")
    return public_name(name) if name else type(model).__name__


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
            that break it are skipped with a code and counted in the report.

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
        self.state = process_state()
        policy_loading = policy_loading or ModelLoading()
        labeler_model = labeler_model or args.labeler_model_name_or_path
        self_feedback = labeler_model is None or labeler_model is model
        on_transformers = args.sampling_backend == "transformers" or (
            self_feedback and args.labeler_backend == "transformers"
        )
        if on_transformers:
            self.model, self.processor = self._load_vlm(model, processor, "policy", policy_loading)
            policy_name = model_id(self.model)
        else:  # vLLM loads the policy: only its processor here
            require_model_name(model, "policy", "sampling_backend")
            path, loaded = vlm_processor(model, policy_loading, "policy")
            self.model, self.processor, policy_name = None, processor or loaded, public_name(path)
        if self_feedback:
            labeler_model, labeler_loading = model, policy_loading
            self.labeler_model, self.labeler_processor = self.model, labeler_processor or self.processor
            labeler_name = policy_name
        elif args.labeler_backend == "transformers":
            labeler_loading = args.labeler_loading
            self.labeler_model, self.labeler_processor = self._load_vlm(
                labeler_model, labeler_processor, "labeler", labeler_loading
            )
            labeler_name = model_id(self.labeler_model)
        else:
            labeler_loading = args.labeler_loading
            require_model_name(labeler_model, "labeler", "labeler_backend")
            path, loaded = vlm_processor(labeler_model, labeler_loading, "labeler")
            self.labeler_model, self.labeler_processor = None, labeler_processor or loaded
            labeler_name = public_name(path)
        self.claim_splitter, self.question_writer = self._divide(claim_splitter, question_writer)
        self._tokenizer = getattr(self.processor, "tokenizer", self.processor)  # for the prompt checks
        if args.sampling_backend == "vllm":
            self.sampler = vllm_sampler(args, model, policy_loading, self.processor, self.state)
        else:
            self.sampler = CandidateSampler(
                self.model,
                self.processor,
                num_candidates=args.num_candidates,
                temperature=args.temperature,
                max_new_tokens=args.max_new_tokens,
                top_p=args.top_p,
                top_k=args.top_k,
                generation_kwargs=args.generation_kwargs,
            )
        if args.labeler_backend == "vllm":
            self.labeler = vllm_labeler(args, labeler_model, labeler_loading, self.labeler_processor, self.state)
        else:
            self.labeler = YesNoLabeler(self.labeler_model, self.labeler_processor, batch_size=args.labeler_batch_size)
        self.provenance = {
            "policy_model": policy_name,
            "labeler_model": labeler_name,
            "claim_splitter": public_name(self.claim_splitter.name),
            "question_writer": public_name(self.question_writer.name),
        }

    # -- set-up --------------------------------------------------------------------------------------------------------

    @staticmethod
    def _load_vlm(
        model: PreTrainedModel | str | os.PathLike, processor: ProcessorMixin | None, role: str, loading: ModelLoading
    ) -> tuple[PreTrainedModel, ProcessorMixin]:
        if isinstance(model, (str, os.PathLike)):
            model, loaded_processor = load_vlm(model, loading, role)
            processor = processor or loaded_processor
        elif processor is None:
            raise ValueError(f"Pass the {role}'s processor along with its model object")
        else:
            check_vision_language_model(model, processor, role)
        return model.eval(), processor

    def _divide(
        self, splitter: ClaimSplitter | None, writer: QuestionWriter | None
    ) -> tuple[ClaimSplitter, QuestionWriter]:
        args = self.args
        runners: dict[str, CausalLMRunner | VLLMCausalLMRunner] = {}
        self._runners = runners

        def runner(name: str) -> CausalLMRunner | VLLMCausalLMRunner:
            if name not in runners and args.splitter_backend == "vllm":
                runners[name] = vllm_runner(args, name, self.state)
            if name not in runners:
                model, tokenizer = load_causal_lm(name, args.splitter_loading)
                runners[name] = CausalLMRunner(
                    model,
                    tokenizer,
                    temperature=args.splitter_temperature,
                    top_p=args.splitter_top_p,
                    max_new_tokens=args.splitter_max_new_tokens,
                    batch_size=args.splitter_batch_size,
                )
            return runners[name]

        if splitter is None:
            name = args.splitter_model_name_or_path
            splitter = (
                LLMClaimSplitter(runner(name), args.splitter_max_input_words)
                if name
                else RuleBasedClaimSplitter(args.splitter_max_input_words)
            )
        if writer is None:
            name = args.question_writer_model_name_or_path or args.splitter_model_name_or_path
            writer = LLMQuestionWriter(runner(name)) if name else RuleBasedQuestionWriter()
        return splitter, writer

    # -- the run -------------------------------------------------------------------------------------------------------

    def generate(
        self,
        dataset: Dataset,
        output_dir: str | os.PathLike | None = None,
        *,
        seed: int = 42,
        iteration: int = 1,
        overwrite_output_dir: bool = False,
        disable_tqdm: bool = False,
        strict: bool = False,
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
            strict: Raise `BadRowError`, naming the row, on the first unusable row instead of skipping it.
        """
        args, state = self.args, self.state
        if iteration < 1:
            raise ValueError(f"Iterations are numbered from 1, got {iteration}")
        column, video_column = visual_columns(dataset)
        if video_column is not None:
            self._check_video_support()
        ids = prompt_ids(dataset)
        duplicates = _duplicates(ids)
        temporary = output_dir is None
        if temporary and state.num_processes > 1:
            raise ValueError("Pass an output_dir when running on several processes: they share it")
        root = Path(tempfile.mkdtemp(prefix="rlaifv-feedback-") if temporary else output_dir)
        store = ShardStore(root)
        with contextlib.ExitStack() as stack:
            if state.is_main_process and not temporary:
                stack.enter_context(RunLock(root))
                remove_temporary_files(root)
                manifest = Manifest.open(root, self._settings(dataset, seed, iteration), overwrite_output_dir)
                if manifest.restarted:
                    store.clear()
            state.wait_for_everyone()

            num_shards = math.ceil(len(dataset) / args.shard_size)
            mine = list(range(state.process_index, num_shards, state.num_processes))
            context = _RunContext(
                dataset, column, ids, duplicates, seed, iteration, disable_tqdm, strict, video_column
            )
            wall: dict[str, float] = {}
            for stage, run_shard in zip(STAGES, (self._sample_shard, self._divide_shard, self._label_shard)):
                start = time.perf_counter()
                try:
                    self._run_stage(store, stage, mine, context, run_shard)
                finally:
                    self.close_engines()  # a vLLM engine frees its memory before the next stage (and training)
                wall[stage] = time.perf_counter() - start
            state.wait_for_everyone()

            if state.is_main_process:
                start = time.perf_counter()
                output = self._merge(store, num_shards, context, None if temporary else root)
                wall["pairs"] = time.perf_counter() - start
                output.report.wall_seconds = wall
                if not temporary:
                    _save_dataset(output.preference, root / "preference")
                    _save_dataset(output.audit, root / "audit")
                    _save_dataset(output.rankings, root / "rankings")
                    output.report.save(root / "report.json")
            state.wait_for_everyone()
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
            return FeedbackOutput(output.preference, output.audit, output.report, None, output.rankings)
        if not state.is_main_process:
            output = FeedbackOutput(
                load_from_disk(str(root / "preference")),
                load_from_disk(str(root / "audit")),
                RunReport.load(root / "report.json"),
                root,
                load_from_disk(str(root / "rankings")),
            )
        return output

    def close_engines(self) -> None:
        """Stop the vLLM engines this generator started (they start again when needed)."""
        for part in (self.sampler, self.labeler, *self._runners.values()):
            if isinstance(part, LazyEngine):
                part.close()

    def _check_video_support(self) -> None:
        """Video prompts run on the transformers backends, with processors that take videos."""
        for role, backend in (("policy", "sampling_backend"), ("labeler", "labeler_backend")):
            if getattr(self.args, backend) != "transformers":
                raise ValueError(f"Video prompts need {backend}='transformers' (the {role} runs on vLLM)")
        require_video_support(self.processor, "policy")
        require_video_support(self.labeler_processor, "labeler")

    def _settings(self, dataset: Dataset, seed: int, iteration: int) -> ResultSettings:
        """What decides this run's results: the config's result fields, the models, the prompts, seed, iteration."""
        config = result_settings(self.args)
        return ResultSettings(
            {
                **config,
                **self.provenance,
                "seed": seed,
                "iteration": iteration,
                "dataset": {
                    "fingerprint": getattr(dataset, "_fingerprint", None),
                    "num_rows": len(dataset),
                    "columns": dataset.column_names,
                },
            },
            config.defaults,
        )

    def _run_stage(
        self, store: ShardStore, stage: str, shards: list[int], context: _RunContext, run_shard: Callable
    ) -> None:
        todo = [shard for shard in shards if not store.done(stage, shard)]
        if len(todo) < len(shards):
            logger.info("%s: %d of %d shard(s) already done", stage, len(shards) - len(todo), len(shards))
        size = self.args.shard_size
        total = sum(_shard_length(context, shard, size) for shard in todo)
        disable = context.disable_tqdm or not self.state.is_main_process
        with tqdm(total=total, desc=f"RLAIF-V {stage}", unit="prompt", disable=disable) as progress:
            for shard in todo:
                logger.debug("%s: shard %d started", stage, shard)
                start = time.perf_counter()
                payload = run_shard(store, shard, context, progress)
                payload["seconds"] = time.perf_counter() - start
                payload["process_index"] = self.state.process_index
                store.write(stage, shard, payload)

    # -- stages --------------------------------------------------------------------------------------------------------

    def _sample_shard(self, store: ShardStore, shard: int, context: _RunContext, progress: tqdm) -> dict[str, Any]:
        start = shard * self.args.shard_size
        ready, skipped = [], []
        for offset, row in enumerate(raw_rows(context.dataset, start, start + self.args.shard_size)):
            index = start + offset
            prompt_id = context.ids[index]
            try:
                if prompt_id is None:
                    raise BadRow("id.missing", "no prompt id", "prompt_id")
                if index in context.duplicates:
                    first = context.duplicates[index]
                    raise BadRow("id.duplicate", f"the prompt id of row {first} too", "prompt_id")
                prompt, images, videos = check_visual_prompt_row(
                    row, context.column, context.video_column, self.validation, self._tokenizer
                )
                seed = derive_seed(context.seed, prompt_id, "candidates")
                ready.append(
                    {"row": index, "prompt_id": prompt_id, "seed": seed, "prompt": prompt, "images": images,
                     "videos": videos}
                )  # fmt: skip
            except BadRow as problem:
                if context.strict:
                    raise BadRowError("RLAIFVFeedbackGenerator", index, prompt_id, problem) from None
                skipped.append(_skip(index, prompt_id, "input", problem))
                progress.update(1)
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
            progress.update(len(batch))
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

    def _divide_shard(self, store: ShardStore, shard: int, context: _RunContext, progress: tqdm) -> dict[str, Any]:
        candidates = store.read("candidates", shard)
        records, skipped = [], []
        fallbacks_before = getattr(self.question_writer, "num_fallbacks", 0)
        instruction = self.args.yes_no_instruction
        for record in candidates["records"]:
            try:
                answers = record["answers"]
                seed = derive_seed(context.seed, record["prompt_id"], "claims")
                claims = self.claim_splitter.split([record["instruction"]] * len(answers), answers, seed)
                flat = [claim for answer_claims in claims for claim in answer_claims]
                seed = derive_seed(context.seed, record["prompt_id"], "questions")
                written = iter(self.question_writer.write(flat, seed) if flat else [])
                questions = [[with_instruction(next(written), instruction) for _ in c] for c in claims]
                records.append({"row": record["row"], "claims": claims, "questions": questions})
            except VLLMEngineError:
                raise
            except Exception as error:
                skipped.append(_failure(record["row"], record["prompt_id"], "claims", error))
            progress.update(1)
        progress.update(_shard_length(context, shard, self.args.shard_size) - len(candidates["records"]))
        fallbacks = getattr(self.question_writer, "num_fallbacks", 0) - fallbacks_before
        return {"records": records, "skipped": skipped, "question_writer_fallbacks": fallbacks}

    def _label_shard(self, store: ShardStore, shard: int, context: _RunContext, progress: tqdm) -> dict[str, Any]:
        candidates = {record["row"]: record for record in store.read("candidates", shard)["records"]}
        claims = store.read("claims", shard)["records"]
        start = shard * self.args.shard_size
        rows = _shard_rows(context, shard, self.args.shard_size)
        records, skipped = [], []
        full_before = self.labeler.num_full_forwards
        for record in claims:
            try:
                row = rows[record["row"] - start]
                images, videos = self._visuals(row, context)
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
                skipped.append(_failure(record["row"], candidates[record["row"]]["prompt_id"], "labels", error))
            progress.update(1)
        progress.update(len(rows) - len(claims))
        return {"records": records, "skipped": skipped, "full_forwards": self.labeler.num_full_forwards - full_before}

    def _visuals(self, row: dict[str, Any], context: _RunContext) -> tuple[list, list]:
        """A checked row's decoded images and videos."""
        if context.video_column is None:
            return row_images(row.get(context.column), context.column, self.validation), []
        value = row.get(context.column) if context.column else None
        images = row_images(value, context.column, self.validation) if value else []
        return images, row_videos(row.get(context.video_column), context.video_column, self.validation)

    # -- merge ---------------------------------------------------------------------------------------------------------

    def _merge(
        self, store: ShardStore, num_shards: int, context: _RunContext, output_dir: Path | None
    ) -> FeedbackOutput:
        args = self.args
        report = RunReport(num_rows=len(context.dataset), num_processes=self.state.num_processes)
        results: list[PromptResult] = []
        for shard in range(num_shards):
            payloads = {stage: store.read(stage, shard) for stage in STAGES}
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

        start = time.perf_counter()
        selection = select_pairs(
            results,
            args.min_score_gap,
            args.pairs_per_prompt,
            args.length_balancing,
            args.length_balancing_step,
            context.seed,
        )
        report.num_possible_pairs = selection.num_possible
        report.num_sampled_pairs = selection.num_sampled
        report.num_pairs = len(selection.pairs)
        report.length_balance_ratio = selection.ratio
        report.length_gap_before, report.length_gap_after = selection.gap_before, selection.gap_after
        report.rows_without_pairs = selection.rows_without_pairs

        images, videos = {}, {} if context.video_column else None
        for row in sorted({result.row for result in results}):
            raw = raw_rows(context.dataset, row, row + 1)[0]
            values = raw.get(context.column) if context.column else None
            if context.video_column is None or values:
                values = row_image_values(values, context.column)
            images[row] = [stored_image(value, self.validation, context.column) for value in values or []]
            if videos is not None:  # original bytes of every frame
                column = context.video_column
                videos[row] = [
                    [stored_image(frame, self.validation, column) for frame in video]
                    for video in row_video_values(raw.get(column), column)
                ]
        preference = preference_dataset(
            selection.pairs, images, prompt_feature(context.dataset), context.iteration, self.provenance, videos
        )
        audit = audit_dataset(results, selection.pairs, context.iteration, self.provenance)
        rankings = rankings_dataset(
            results, images, prompt_feature(context.dataset), context.iteration, self.provenance, videos
        )
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
        return FeedbackOutput(preference, audit, report, output_dir, rankings)


@dataclass
class _RunContext:
    dataset: Dataset
    column: str | None
    ids: list[str | None]
    duplicates: dict[int, int]
    seed: int
    iteration: int
    disable_tqdm: bool
    strict: bool
    video_column: str | None = None


def _duplicates(ids: list[str | None]) -> dict[int, int]:
    """Rows whose prompt id an earlier row already has, mapped to that earlier row."""
    first: dict[str, int] = {}
    duplicates = {}
    for index, prompt_id in enumerate(ids):
        if prompt_id is None:
            continue
        if prompt_id in first:
            duplicates[index] = first[prompt_id]
        else:
            first[prompt_id] = index
    return duplicates


def _shard_rows(context: _RunContext, shard: int, size: int) -> list[dict[str, Any]]:
    return raw_rows(context.dataset, shard * size, (shard + 1) * size)


def _shard_length(context: _RunContext, shard: int, size: int) -> int:
    return min(size, len(context.dataset) - shard * size)


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


def _save_dataset(dataset: Dataset, path: Path) -> None:
    """Save with `save_to_disk` into a temporary folder moved into place, so that `path` is never half written."""
    with atomic_directory(path) as scratch:
        dataset.save_to_disk(str(scratch), num_shards=1 if len(dataset) == 0 else None)  # an empty one loads too
