"""The end of a run: each policy's metrics, where the artifacts are, and which Hub pushes succeeded."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate import PartialState

from ..artifacts import config_name, dataset_dir
from ..atomic_io import atomic_write_text
from .run import RecipeRun


SUMMARY_FILE = "summary.md"


@dataclass
class RunSummary:
    """What a run produced, read from its manifest."""

    output_dir: Path
    policies: dict[int, str] = field(default_factory=dict)
    evaluation: dict[int, dict[str, float]] = field(default_factory=dict)
    num_pairs: dict[int, int] = field(default_factory=dict)
    pushes: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset_repo: str | None = None
    model_repo: str | None = None

    @classmethod
    def of(cls, run: RecipeRun, num_iterations: int, dataset_repo: str | None, model_repo: str | None) -> RunSummary:
        summary = cls(run.root, dataset_repo=dataset_repo, model_repo=model_repo)
        for k in range(num_iterations + 1):
            summary.policies[k] = run.policy(k)
            if run.finished(k, "evaluate") and run.result(k, "evaluate"):
                summary.evaluation[k] = run.result(k, "evaluate")
            for stage in ("feedback", "reference_log_probs"):  # the pairs written, after the trainability checks
                if run.finished(k, stage):
                    summary.num_pairs[k] = run.result(k, stage)["num_pairs"]
            for stage, repo in (("push_dataset", dataset_repo), ("push_model", model_repo)):
                if run.finished(k, stage):
                    repo = run.result(k, stage).get("repo", repo)  # where it went (or failed to go)
                    target = (
                        f"datasets/{repo} ({config_name(k)})"
                        if stage == "push_dataset"
                        else f"{repo}@{config_name(k)}"
                    )
                    summary.pushes[target] = run.result(k, stage)
        return summary

    def table(self) -> str:
        """A Markdown table of the metrics of the base policy and each iteration (empty without evaluation)."""
        if not self.evaluation:
            return ""
        metrics = list(dict.fromkeys(name for values in self.evaluation.values() for name in values))
        pairs_column = " pairs trained on |" if self.num_pairs else ""  # a recipe without pairs (GRPO_rank): none
        lines = [
            "| policy | " + " | ".join(metrics) + " |" + pairs_column,
            "|---" * (len(metrics) + 1 + bool(pairs_column)) + "|",
        ]
        for k in sorted(self.evaluation):
            values = " | ".join(_number(self.evaluation[k].get(name)) for name in metrics)
            pairs = f" {self.num_pairs.get(k, '')} |" if pairs_column else ""
            lines.append(f"| {'base' if k == 0 else f'iteration {k}'} | {values} |{pairs}")
        return "\n".join(lines)

    def artifacts(self) -> str:
        where = []
        if dataset_dir(self.output_dir).is_dir():
            where.append(f"preference data: {dataset_dir(self.output_dir)} (one config per iteration)")
        where += [f"policy of iteration {k}: {path}" for k, path in sorted(self.policies.items()) if k > 0]
        pushed = [target for target, result in self.pushes.items() if "commit" in result]
        failed = {target: result for target, result in self.pushes.items() if "failed" in result}
        if pushed:
            where.append("pushed to the Hub: " + ", ".join(pushed))
        for target, result in failed.items():
            where.append(f"NOT pushed: {target} ({result['failed']}); push later with: {result['push_later']}")
        return "\n".join(where)

    def write(self) -> None:
        """`summary.md` in the run folder (by the main process)."""
        if not PartialState().is_main_process:
            return
        table = self.table()
        atomic_write_text(self.output_dir / SUMMARY_FILE, (table + "\n\n" if table else "") + self.artifacts() + "\n")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"
