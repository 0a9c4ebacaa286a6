"""The iterative RLAIF-V loop: sample -> label -> pairs -> reference log-probs -> publish -> DPO -> publish, K times.

Every stage records its completion in `<output_dir>/run_state.json`; running the same command again after a crash
continues from the first unfinished stage (the feedback stage also resumes inside, shard by shard, and training
resumes from its last checkpoint). Under `accelerate launch` every process runs sampling, labeling, reference
log-probs and training on its share; the main process writes files, cards, evaluates and pushes.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate import PartialState
from datasets import Dataset, concatenate_datasets
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.trainer_utils import get_last_checkpoint
from trl import ModelConfig, get_peft_config

from ..artifacts import (
    atomic_write_text,
    config_name,
    dataset_configs,
    dataset_dir,
    model_dir,
    write_iteration_dataset,
)
from ..cards import DatasetCardInfo, IterationStats, public_name, render_dataset_card, render_model_card
from ..data import load_preference_dataset
from ..feedback import RLAIFVFeedbackGenerator
from ..feedback.pairs import num_words
from ..hub import HubPushError, RetryPolicy, check_hub_access, push_dataset, push_later_hint, push_model, pushing
from ..synthetic import evaluate_hallucination
from ..synthetic.builtin import BUILTIN_POLICY, is_builtin, materialize_builtin
from ..trainer import RLAIFVDPOConfig, RLAIFVDPOTrainer, precompute_ref_log_probs
from .arguments import IterativeDPOArguments
from .prompts import iteration_prompts
from .state import RunState


logger = logging.getLogger(__name__)

# Training arguments that do not change results: a rerun may change them.
_NOT_RESULTS = ("dir", "hub", "report_to", "logging", "push", "tqdm", "save_", "run_name", "eval_", "dataloader")


@dataclass
class RunSummary:
    """Where a run's artifacts are and how much each policy hallucinates (when evaluated)."""

    output_dir: Path
    policies: dict[int, str] = field(default_factory=dict)
    evaluation: dict[int, dict[str, float]] = field(default_factory=dict)
    feedback: dict[int, dict[str, Any]] = field(default_factory=dict)
    dataset_repo: str | None = None
    model_repo: str | None = None

    def table(self) -> str:
        """A Markdown table of the hallucination rates of the base policy and each iteration."""
        lines = ["| policy | CHAIR response | CHAIR mention | recall | pairs trained on |", "|---|---|---|---|---|"]
        for k in sorted(self.evaluation):
            metrics = self.evaluation[k]
            pairs = self.feedback.get(k - 1, {}).get("num_pairs", "")
            name = "base" if k == 0 else f"iteration {k}"
            lines.append(
                f"| {name} | {100 * metrics['response_rate']:.1f}% | {100 * metrics['mention_rate']:.1f}% | "
                f"{100 * metrics['recall']:.1f}% | {pairs} |"
            )
        return "\n".join(lines)

    def artifacts(self) -> str:
        where = [f"preference data: {dataset_dir(self.output_dir)} (one config per iteration)"]
        where += [f"policy of iteration {k}: {path}" for k, path in sorted(self.policies.items()) if k > 0]
        if self.dataset_repo:
            where.append(f"Hub dataset: {self.dataset_repo}")
        if self.model_repo:
            where.append(f"Hub model: {self.model_repo} (branches iteration-1 ... iteration-{max(self.policies)})")
        return "\n".join(where)


def run_settings(
    args: IterativeDPOArguments, training_args: RLAIFVDPOConfig, model_args: ModelConfig
) -> dict[str, Any]:
    """The settings that decide a run's results (a resumed run must use the same)."""
    recipe = {
        k: v
        for k, v in dataclasses.asdict(args).items()
        if k not in ("dataset_repo", "model_repo", "private", "license") and not k.startswith("hub_")
    }
    recipe["model"] = dataclasses.asdict(model_args)
    training = {
        key: value
        for key, value in training_args.to_dict().items()
        if not any(marker in key for marker in _NOT_RESULTS)
        and isinstance(value, (int, float, str, bool, list, type(None)))
    }
    return json.loads(json.dumps({"recipe": recipe, "training": training}, default=str))


class IterativeDPORunner:
    """Runs the recipe: `IterativeDPORunner(args, training_args).run()`."""

    def __init__(
        self, args: IterativeDPOArguments, training_args: RLAIFVDPOConfig, model_args: ModelConfig | None = None
    ):
        self.args, self.training_args = args, training_args
        self.model_args = model_args or ModelConfig()
        self.base_name = self.model_args.model_name_or_path or BUILTIN_POLICY
        self.peft_config = get_peft_config(self.model_args)
        if self.model_args.dtype not in (None, "auto") or self.model_args.attn_implementation:
            init = dict(training_args.model_init_kwargs or {})
            init.setdefault("dtype", self.model_args.dtype)
            if self.model_args.attn_implementation:
                init.setdefault("attn_implementation", self.model_args.attn_implementation)
            training_args.model_init_kwargs = init
        self.root = Path(training_args.output_dir)
        self.process = PartialState()
        self.retry = RetryPolicy(attempts=args.hub_retry_attempts, initial_delay=args.hub_retry_initial_delay)
        self.summary = RunSummary(self.root, dataset_repo=args.dataset_repo, model_repo=args.model_repo)

    # ------------------------------------------------------------------ the loop

    def run(self) -> RunSummary:
        args = self.args
        repos = [repo for repo in (args.dataset_repo, args.model_repo) if repo]
        if repos and self.process.is_main_process:
            check_hub_access(repos, retry=self.retry)  # before any long work
        self.state = self._open_state()
        self.summary.policies[0] = self._base_policy()
        self._stage(0, "evaluate", lambda: self._evaluate(0))
        for k in range(args.num_iterations):
            self._stage(k, "feedback", lambda k=k: self._feedback(k))
            self._stage(k, "reference_log_probs", lambda k=k: self._reference_log_probs(k))
            if args.dataset_repo:
                self._stage(k, "push_dataset", lambda k=k: self._push(self._push_dataset, k))
            self._stage(k + 1, "train", lambda k=k: self._train(k))
            self.summary.policies[k + 1] = str(model_dir(self.root, k + 1))
            self._stage(k + 1, "evaluate", lambda k=k: self._evaluate(k + 1))
            self._stage(k + 1, "model_card", lambda k=k: self._model_card(k + 1))
            if args.model_repo:
                self._stage(k + 1, "push_model", lambda k=k: self._push(self._push_model, k + 1))
        for k in range(args.num_iterations):
            self.summary.feedback[k] = self.state.result(k, "feedback")
        for k in range(args.num_iterations + 1):
            if self.state.finished(k, "evaluate") and self.state.result(k, "evaluate"):
                self.summary.evaluation[k] = self.state.result(k, "evaluate")
        if self.process.is_main_process:
            atomic_write_text(
                self.root / "summary.md", self.summary.table() + "\n\n" + self.summary.artifacts() + "\n"
            )
        return self.summary

    def _open_state(self) -> RunState:
        settings = run_settings(self.args, self.training_args, self.model_args)
        if self.process.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            RunState.open(self.root, settings)
        self.process.wait_for_everyone()
        return RunState.open(self.root, settings)

    def _stage(self, iteration: int, stage: str, work) -> None:
        """Run a stage unless the state says it is done; record its result (main process) once every process is."""
        self.state = RunState.open(self.root, self.state.settings)
        if self.state.finished(iteration, stage):
            logger.info("Iteration %d: %s already done", iteration, stage)
            return
        logger.info("Iteration %d: %s", iteration, stage)
        result = work()
        self.process.wait_for_everyone()
        if self.process.is_main_process:
            self.state.mark(iteration, stage, result if result is not None else True)
        self.process.wait_for_everyone()

    # ------------------------------------------------------------------ stages

    def _materialized(self, name: str | None, target: Path) -> str | None:
        """`name`, or for a built-in model the folder it is saved into (once, by the main process)."""
        if not is_builtin(name):
            return name
        if self.process.is_main_process and not (target / "config.json").is_file():
            materialize_builtin(name, target)
        self.process.wait_for_everyone()
        return str(target)

    def _base_policy(self) -> str:
        return self._materialized(self.base_name, model_dir(self.root, 0))

    def _labeler(self) -> str | None:
        """The labeler's name or path; None: self-feedback."""
        return self._materialized(self.args.labeler_model_name_or_path, self.root / "models" / "labeler")

    def _policy_name(self, iteration: int) -> str:
        """How cards name the policy of `iteration`: the base's own name, or the model repo's branch."""
        if iteration == 0:
            return public_name(self.base_name)
        if self.args.model_repo:
            return f"{self.args.model_repo}@{config_name(iteration)}"
        return public_name(self._policy(iteration))

    def _policy(self, iteration: int) -> str:
        return self.summary.policies[0] if iteration == 0 else str(model_dir(self.root, iteration))

    def _load(self, name_or_path: str):
        kwargs = dict(self.training_args.model_init_kwargs or {})
        kwargs.setdefault("trust_remote_code", self.training_args.trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(name_or_path, **kwargs).to(self.process.device).eval()
        processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=self.training_args.trust_remote_code)
        return model, processor

    def _feedback(self, k: int) -> dict[str, Any]:
        args = self.args
        folder = self.root / "feedback" / config_name(k)
        if k == 0 and args.seed_preference_dataset:
            pairs = self._published_pairs(args.seed_preference_dataset, 0, args.prompts_per_iteration)
            stats = self._stats_of(pairs, k, policy=args.seed_preference_dataset, labeler="published", report=None)
        else:
            model, processor = self._load(self._policy(k))
            generator = RLAIFVFeedbackGenerator(
                model,
                processor,
                args=args.feedback_config(
                    output_dir=str(folder),
                    seed=self.training_args.seed,
                    iteration=k,
                    disable_tqdm=self.training_args.disable_tqdm,
                    model_init_kwargs=self.training_args.model_init_kwargs,
                    trust_remote_code=self.training_args.trust_remote_code,
                ),
                labeler_model=self._labeler(),
            )
            prompts = iteration_prompts(
                args.prompt_dataset, k, args.prompts_per_iteration, args.prompt_dataset_split,
                args.prompt_dataset_config, seed=self.training_args.seed,
            )  # fmt: skip
            output = generator.generate(prompts)
            policy = self._policy_name(k)
            labeler = public_name(args.labeler_model_name_or_path) if args.labeler_model_name_or_path else policy
            names = {"policy_model": policy, "labeler_model": labeler}
            pairs = output.preference.map(lambda _: names, desc="Naming the models")
            stats = self._stats_of(pairs, k, policy=policy, labeler=labeler, report=output.report)
            del model, generator
            gc.collect()
        if args.mix_preference_dataset and args.mix_pairs_per_iteration:
            mixed = self._published_pairs(args.mix_preference_dataset, k, args.mix_pairs_per_iteration)
            pairs = _concatenate_aligned(pairs, mixed)
            stats["num_pairs"] = len(pairs)
        if len(pairs) == 0:
            raise RuntimeError(
                f"Iteration {k} produced no preference pair (see {folder / 'report.json'}): the policy's answers to a "
                "prompt all got the same score. Sample more candidates or prompts, or lower min_score_gap."
            )
        if self.process.is_main_process:
            pairs.save_to_disk(str(folder / "pairs"))
        return stats

    def _published_pairs(self, name: str, k: int, count: int) -> Dataset:
        dataset = load_preference_dataset(name, name=self.args.preference_dataset_config)
        start = (k * count) % max(len(dataset), 1)
        return dataset.select([(start + i) % len(dataset) for i in range(min(count, len(dataset)))])

    def _stats_of(self, pairs: Dataset, k: int, policy: str, labeler: str, report) -> dict[str, Any]:
        chosen = [num_words(row[0]["content"][0]["text"]) for row in pairs["chosen"]] or [0]
        rejected = [num_words(row[0]["content"][0]["text"]) for row in pairs["rejected"]] or [0]
        stats = IterationStats(
            iteration=k,
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

    def _reference_log_probs(self, k: int) -> dict[str, Any]:
        folder = self.root / "feedback" / config_name(k)
        pairs = Dataset.load_from_disk(str(folder / "pairs"))
        model, processor = self._load(self._policy(k))
        batch_size = self.training_args.precompute_ref_batch_size or self.training_args.per_device_train_batch_size
        pairs = precompute_ref_log_probs(
            model, processor, pairs, batch_size=batch_size, max_length=self.training_args.max_length
        )
        del model
        gc.collect()
        if self.process.is_main_process:
            write_iteration_dataset(pairs, self.root, k)
            self._dataset_card()
        return {"num_pairs": len(pairs)}

    def _dataset_card(self) -> None:
        feedback = self.args.feedback_config()
        info = DatasetCardInfo(
            splitter=feedback.splitter_model_name_or_path or "the rule-based splitter of rlaifv-trl",
            sampling={
                "num_candidates": feedback.num_candidates, "temperature": feedback.temperature,
                "top_p": feedback.top_p, "max_new_tokens": feedback.max_new_tokens, "seed": self.training_args.seed,
            },
            pairs={
                "min_score_gap": feedback.min_score_gap, "pairs_per_prompt": feedback.pairs_per_prompt,
                "length_balance": feedback.length_balancing,
            },
            license=self.args.license,
        )  # fmt: skip
        readme = dataset_dir(self.root) / "README.md"
        previous = readme.read_text(encoding="utf-8") if readme.is_file() else None
        iterations = [
            IterationStats.from_dict(self.state.result(k, "feedback"))
            for k in range(self.args.num_iterations)
            if self.state.finished(k, "feedback")
        ]
        repo = self.args.dataset_repo or f"local/{self.root.name}"
        card = render_dataset_card(repo, iterations, info, dataset_configs(self.root), previous_card=previous)
        atomic_write_text(readme, str(card))

    def _train(self, k: int) -> dict[str, Any]:
        args, base = self.args, self.training_args
        output_dir = self.root / "training" / config_name(k + 1)
        overrides: dict[str, Any] = {"output_dir": str(output_dir), "precompute_ref_log_probs": True}
        callbacks: list[TrainerCallback] = []
        eval_dataset = None
        train_dataset = load_preference_dataset(str(dataset_dir(self.root)), name=config_name(k))
        if args.checkpoint_selection == "best":
            overrides.update(
                eval_strategy="steps", eval_steps=0.25, save_strategy="steps", save_steps=0.25,
                load_best_model_at_end=True, metric_for_best_model="eval_chair_response", greater_is_better=False,
            )  # fmt: skip
            callbacks.append(ChairEvaluationCallback(args))
            eval_dataset = train_dataset.select(range(min(len(train_dataset), 2 * base.per_device_eval_batch_size)))
        training_args = dataclasses.replace(base, **overrides)
        processor = AutoProcessor.from_pretrained(self._policy(k), trust_remote_code=base.trust_remote_code)
        trainer = RLAIFVDPOTrainer(
            model=self._policy(k),
            args=training_args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processor,
            callbacks=callbacks,
            peft_config=self.peft_config,
        )
        checkpoint = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
        result = trainer.train(resume_from_checkpoint=checkpoint)
        target = model_dir(self.root, k + 1)
        if self.peft_config is None:
            trainer.save_model(str(target))
        elif self.process.is_main_process:  # a full model: it samples the next iteration and is its reference
            trainer.accelerator.unwrap_model(trainer.model).merge_and_unload().save_pretrained(str(target))
        if self.process.is_main_process:
            processor.save_pretrained(str(target))
            (target / TRAINING_ARGS_NAME).unlink(missing_ok=True)  # a pickle: the model card lists the settings
        metrics = {key: round(value, 6) for key, value in result.metrics.items() if isinstance(value, (int, float))}
        del trainer
        gc.collect()
        return metrics

    def _evaluate(self, iteration: int) -> dict[str, float] | None:
        if self.args.evaluation is None:
            return None
        result = None
        if self.process.is_main_process:
            model, processor = self._load(self._policy(iteration))
            result = evaluate_hallucination(
                model, processor, num_scenes=self.args.eval_prompts, temperature=self.args.eval_temperature,
                max_new_tokens=self.args.eval_max_new_tokens, seed=self.training_args.seed,
            ).to_dict()  # fmt: skip
            logger.info(
                "Policy %d: CHAIR response %.3f, mention %.3f, recall %.3f",
                iteration,
                result["response_rate"],
                result["mention_rate"],
                result["recall"],
            )
        return result

    def _model_card(self, iteration: int) -> None:
        if not self.process.is_main_process:
            return
        base = self.training_args
        metrics = {}
        if self.state.finished(iteration, "evaluate") and self.state.result(iteration, "evaluate"):
            chair = self.state.result(iteration, "evaluate")
            metrics = {
                f"ShapesWorld CHAIR {key.split('_')[0]}": round(chair[key], 4)
                for key in ("response_rate", "mention_rate", "recall")
            }
        train = self.state.result(iteration, "train")
        metrics.update({key: value for key, value in train.items() if key == "train_loss"})  # runtimes vary by run
        hyperparameters = {
            "beta": base.beta, "learning_rate": base.learning_rate,
            "lr_scheduler_type": getattr(base.lr_scheduler_type, "value", base.lr_scheduler_type),
            "warmup_steps": base.warmup_steps, "weight_decay": base.weight_decay, "num_train_epochs": base.num_train_epochs,
            "max_steps": base.max_steps, "per_device_train_batch_size": base.per_device_train_batch_size,
            "gradient_accumulation_steps": base.gradient_accumulation_steps, "max_length": base.max_length,
            "loss_type": ", ".join(base.loss_type), "seed": base.seed,
            "adapter": f"LoRA r={self.model_args.lora_r} (merged)" if self.peft_config else "none (full fine-tuning)",
        }  # fmt: skip
        reference, reference_revision = public_name(self._policy(iteration - 1)), None
        if iteration == 1:
            reference = self.base_name
        elif self.args.model_repo:
            reference, reference_revision = self.args.model_repo, config_name(iteration - 1)
        card = render_model_card(
            repo_id=self.args.model_repo or f"local/{self.root.name}",
            iteration=iteration,
            base_model=self.base_name,
            dataset_repo=self.args.dataset_repo,
            hyperparameters=hyperparameters,
            reference_model=reference,
            reference_revision=reference_revision,
            beta=base.beta,
            metrics=metrics,
            license=self.args.license,
        )
        card.save(str(model_dir(self.root, iteration) / "README.md"))

    def _push_dataset(self, iteration: int) -> str:
        args = self.args
        return push_dataset(
            self.root, args.dataset_repo, iterations=[iteration], private=args.private, retry=self.retry
        )

    def _push_model(self, iteration: int) -> str:
        args = self.args
        folder = model_dir(self.root, iteration)
        return push_model(folder, args.model_repo, iteration, private=args.private, retry=self.retry)

    def _push(self, push, iteration: int) -> dict[str, Any]:
        """Run `push(iteration)` on the main process; after its retries, stop or carry on as `hub_failure` says."""
        if not self.process.is_main_process:
            return {}
        try:
            with pushing(self.root, self.args.dataset_repo, self.args.model_repo):
                return {"commit": push(iteration)}
        except HubPushError as error:
            if self.args.hub_failure == "stop":
                raise
            logger.error("%s", error)
            return {
                "failed": True,
                "push_later": push_later_hint(self.root, self.args.dataset_repo, self.args.model_repo),
            }


class ChairEvaluationCallback(TrainerCallback):
    """Adds ShapesWorld CHAIR rates (`eval_chair_response`, `eval_chair_mention`, `eval_chair_recall`) to every
    evaluation, so `load_best_model_at_end` can keep the least hallucinating checkpoint."""

    def __init__(self, args: IterativeDPOArguments):
        self.args = args

    def on_evaluate(self, args, state, control, model=None, processing_class=None, metrics=None, **kwargs):
        if model is None or processing_class is None or metrics is None:
            return
        was_training = model.training
        result = evaluate_hallucination(
            model, processing_class, num_scenes=self.args.eval_prompts, temperature=self.args.eval_temperature,
            max_new_tokens=self.args.eval_max_new_tokens, seed=args.seed,
        )  # fmt: skip
        model.train(was_training)
        chair_metrics = {
            "eval_chair_response": result.response_rate,
            "eval_chair_mention": result.mention_rate,
            "eval_chair_recall": result.recall,
        }
        metrics.update(chair_metrics)  # read afterwards to pick the best checkpoint
        if state.log_history and "eval_loss" in state.log_history[-1]:
            state.log_history[-1].update(chair_metrics)  # the Trainer logged this evaluation before this callback


def _concatenate_aligned(generated: Dataset, published: Dataset) -> Dataset:
    """Generated and published pairs in one dataset: the published rows get empty provenance columns."""
    published = published.select_columns([c for c in published.column_names if c in generated.column_names])
    for column in generated.column_names:
        if column not in published.column_names:
            published = published.add_column(column, [None] * len(published))
    published = published.cast(generated.features)
    return concatenate_datasets([generated, published.select_columns(generated.column_names)])
