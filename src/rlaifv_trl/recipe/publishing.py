"""What the recipe publishes: the dataset card, each policy's model card and implicit-reward settings, and the pushes
to the Hub (retried, and with `hub_failure="continue"` recorded as failed with the command that pushes later; a later
`rlaifv-trl push` records its commits in their place)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ..artifacts import config_name, dataset_configs, dataset_dir, model_dir
from ..atomic_io import atomic_write_text
from ..cards import DatasetCardInfo, IterationStats, public_name, render_dataset_card, render_model_card
from ..feedback import FeedbackConfig
from ..hub import (
    HubPushError,
    HubUnavailableError,
    RetryPolicy,
    check_hub_access,
    failure_reason,
    push_dataset,
    push_later_hint,
    push_model,
    pushing,
)
from ..loading import is_registered_model_name
from ..manifest import MANIFEST_FILE, Manifest
from ..scoring.implicit_reward import ImplicitRewardConfig
from ..trainer import RLAIFVDPOConfig
from .arguments import IterativeDPOArguments
from .run import RecipeRun
from .shared_arguments import HubArguments
from .summary import SUMMARY_FILE, RunSummary


logger = logging.getLogger(__name__)


def local_repo_name(run: RecipeRun) -> str:
    """What cards call a repository that is not pushed (yet): `rlaifv-trl push` replaces it with the real one."""
    return f"local/{run.root.name}"


def write_dataset_card(
    run: RecipeRun, script_args: IterativeDPOArguments, feedback_args: FeedbackConfig, training_args: RLAIFVDPOConfig
) -> None:
    """The dataset card of every iteration written so far, updated (not overwritten) in `dataset/README.md` (by
    the main process)."""
    if not run.process.is_main_process:
        return
    info = DatasetCardInfo(
        splitter=feedback_args.splitter_model_name_or_path or "the rule-based splitter of rlaifv-trl",
        sampling={
            "num_candidates": feedback_args.num_candidates, "temperature": feedback_args.temperature,
            "top_p": feedback_args.top_p, "max_new_tokens": feedback_args.max_new_tokens, "seed": training_args.seed,
        },
        pairs={
            "confirmed_claim_weight": feedback_args.confirmed_claim_weight,
            "min_score_gap": feedback_args.min_score_gap, "pairs_per_prompt": feedback_args.pairs_per_prompt,
            "max_confirmed_claim_drop": feedback_args.max_confirmed_claim_drop,
            "max_claim_drop": feedback_args.max_claim_drop,
            "length_balance": feedback_args.length_balancing,
        },
        license=script_args.license,
        has_reference_logps=training_args.precompute_ref_log_probs,
        has_videos=any(
            "videos" in pq.read_schema(path).names for path in dataset_dir(run.root).glob("iteration-*/*.parquet")
        ),
    )  # fmt: skip
    readme = dataset_dir(run.root) / "README.md"
    previous = readme.read_text(encoding="utf-8") if readme.is_file() else None
    iterations = []
    for k in range(1, script_args.num_iterations + 1):
        if run.finished(k, "feedback"):
            stats = dict(run.result(k, "feedback"))
            if run.finished(k, "reference_log_probs"):  # the pairs written, after the trainability checks
                stats["num_pairs"] = run.result(k, "reference_log_probs")["num_pairs"]
            iterations.append(IterationStats.from_dict(stats))
    repo = script_args.dataset_repo or local_repo_name(run)
    card = render_dataset_card(repo, iterations, info, dataset_configs(run.root), previous_card=previous)
    atomic_write_text(readme, str(card))


def write_model_card(
    run: RecipeRun,
    iteration: int,
    script_args: IterativeDPOArguments,
    training_args: RLAIFVDPOConfig,
    adapter: str,
    base_revision: str | None = None,
) -> None:
    """The model card and implicit-reward settings (`implicit_reward.json`) of the policy trained in `iteration`,
    whose reference is the policy of `iteration - 1` (written by the main process)."""
    if not run.process.is_main_process:
        return
    folder = model_dir(run.root, iteration)
    evaluation = run.result(iteration, "evaluate") if run.finished(iteration, "evaluate") else None
    metrics = dict(evaluation or {})
    metrics["train_loss"] = run.result(iteration, "train")["train_loss"]
    hyperparameters = {
        "beta": training_args.beta, "learning_rate": training_args.learning_rate,
        "lr_scheduler_type": getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type),
        "warmup_steps": training_args.warmup_steps, "weight_decay": training_args.weight_decay,
        "num_train_epochs": training_args.num_train_epochs, "max_steps": training_args.max_steps,
        "per_device_train_batch_size": training_args.per_device_train_batch_size,
        "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
        "max_length": training_args.max_length, "loss_type": ", ".join(training_args.loss_type),
        "seed": training_args.seed, "adapter": adapter,
    }  # fmt: skip
    reward = ImplicitRewardConfig.from_dpo_config(training_args)
    if iteration == 1:
        on_hub = not public_name(run.base_model).startswith("local:") or is_registered_model_name(run.base_model)
        reward.reference_model = run.base_model if on_hub else None
        reward.reference_revision = base_revision if on_hub and not is_registered_model_name(run.base_model) else None
    else:
        reward.reference_path = f"../{config_name(iteration - 1)}"
        if script_args.model_repo:
            reward.reference_model, reward.reference_revision = script_args.model_repo, config_name(iteration - 1)
    reward.save(folder)
    card = render_model_card(
        repo_id=script_args.model_repo or local_repo_name(run),
        iteration=iteration,
        base_model=run.base_model,
        dataset_repo=script_args.dataset_repo,
        hyperparameters=hyperparameters,
        reference_model=run.policy_name(iteration - 1),
        beta=training_args.beta,
        metrics=metrics,
        license=script_args.license,
        reference_on_hub=reward.reference_model is not None or reward.reference_path is not None,
    )
    atomic_write_text(folder / "README.md", str(card))


class HubPublisher:
    """Pushes a run's dataset configs and policies as the run goes (main process only), after checking the token."""

    def __init__(self, run: RecipeRun, script_args: HubArguments):
        self.run, self.args = run, script_args
        self.retry = RetryPolicy(
            attempts=script_args.hub_retry_attempts, initial_delay=script_args.hub_retry_initial_delay
        )

    def check_access(self) -> None:
        """Stop before any long work when the token cannot write to the repositories, or when the Hub is unavailable
        (with `hub_failure="continue"`, go on: each push is still tried, and recorded as failed if it fails)."""
        repos = [repo for repo in (self.args.dataset_repo, self.args.model_repo) if repo]
        if not repos or not self.run.process.is_main_process:
            return
        try:
            check_hub_access(repos, retry=self.retry)
        except HubUnavailableError as error:
            if self.args.hub_failure == "stop":
                raise HubUnavailableError(
                    f"{error} Run again once it is back (the run resumes where it stopped), or set "
                    "hub_failure: continue to run without it and push later with `rlaifv-trl push`."
                ) from None
            logger.warning(
                "%s The run goes on (hub_failure: continue): each push is tried when its artifacts are ready, and "
                "%s lists those that failed with the command that pushes them later.",
                error,
                SUMMARY_FILE,
            )

    def push_dataset(self, iteration: int) -> dict[str, Any]:
        return self._push(
            self.args.dataset_repo,
            lambda: push_dataset(
                self.run.root, self.args.dataset_repo, iterations=[iteration], private=self.args.private,
                retry=self.retry,
            ),
        )  # fmt: skip

    def push_model(self, iteration: int) -> dict[str, Any]:
        folder = model_dir(self.run.root, iteration)
        return self._push(
            self.args.model_repo,
            lambda: push_model(folder, self.args.model_repo, iteration, private=self.args.private, retry=self.retry),
        )

    def _push(self, repo: str, push) -> dict[str, Any]:
        """`{"commit": id, "repo": repo}`, or after the retries, stop or (`hub_failure="continue"`) return
        `{"failed": one-line reason, "push_later": command, "repo": repo}`."""
        if not self.run.process.is_main_process:
            return {}
        try:
            with pushing(self.run.root, self.args.dataset_repo, self.args.model_repo):
                return {"commit": push(), "repo": repo}
        except HubPushError as error:
            if self.args.hub_failure == "stop":
                raise
            logger.error("%s", error)
            return {
                "failed": failure_reason(error.__cause__ or error),
                "push_later": push_later_hint(self.run.root, self.args.dataset_repo, self.args.model_repo),
                "repo": repo,
            }


def record_later_push(
    root: str | Path, pushed: dict[str, str], dataset_repo: str | None, model_repo: str | None
) -> bool:
    """Record what `rlaifv-trl push` pushed (`push_run`'s targets and commits) in a recipe run's manifest: the push
    stages of the pushed repositories get the new commits, and the run's `summary.md`, if it wrote one, is rewritten
    from the manifest.

    The caller holds the run's lock. Returns whether the manifest changed; a folder without a manifest (not a recipe
    run) is left as it is.
    """
    if not (Path(root) / MANIFEST_FILE).is_file():
        return False
    manifest = Manifest.read(root)
    updates = {}
    for key in manifest.done:
        config, _, stage = key.rpartition("/")  # an iteration's stages are named like its dataset config and branch
        target, repo = {
            "push_dataset": (f"datasets/{dataset_repo}", dataset_repo),
            "push_model": (f"{model_repo}@{config}", model_repo),
        }.get(stage, (None, None))
        if target in pushed:
            updates[key] = {"commit": pushed[target], "repo": repo}
    for key, result in updates.items():
        manifest.record(key, result)
    if updates and (Path(root) / SUMMARY_FILE).is_file():
        run = RecipeRun.recorded(root)
        RunSummary.of(run, max(run.iterations()), dataset_repo, model_repo).write()
    return bool(updates)
