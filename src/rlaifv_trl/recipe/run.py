"""A recipe run folder: one run at a time, the stages it has finished, nothing half written.

```
<output_dir>/
  manifest.json          settings + finished stages (rlaifv_trl.manifest), each iteration's feedback settings
  dataset/  models/      the publishable artifacts, laid out like their Hub repositories (rlaifv_trl.artifacts)
  feedback/iteration-k/  the feedback generator's shards, pairs and report
  training/iteration-k/  the Trainer's checkpoints
  summary.md
```

Iteration k (k = 1, 2, ...) samples from the policy of iteration k - 1 (the base model for k = 1) into
`feedback/iteration-k` and the dataset configs `iteration-k` and `iteration-k-rankings`, trains in
`training/iteration-k` and saves the policy of iteration k in `models/iteration-k`. The base model is the policy of
iteration 0: its evaluation is the stage `iteration-0/evaluate`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from ..artifacts import config_name, model_dir
from ..atomic_io import remove_temporary_files
from ..cards import public_name
from ..feedback.backend_factory import process_state
from ..manifest import Manifest, ManifestSection, ResultSettings, result_settings
from ..run_lock import RunLock
from ..trainer.checkpoints import last_complete_checkpoint


logger = logging.getLogger(__name__)

TRAINING_DIR = "training"
# The run folder's layout, recorded in its manifest. Earlier releases recorded none and numbered iterations from 0.
RUN_LAYOUT = 2


class RecipeRun:
    """The run in `output_dir`: `with RecipeRun(output_dir, settings, base_model) as run: ...`.

    Entering takes the folder's lock (a second run exits at once), removes what a killed run left half written
    (temporary files, checkpoints not saved to the end) and opens the manifest, refusing a run with other settings,
    and one with fewer iterations than the folder holds (more continue it: the iterations done stay as they are).
    `run.stage(k, name, work, *args)` runs `work(*args)` on every process unless the manifest says iteration k's
    stage `name` is done, and records the main process's result.

    Args:
        output_dir: The run folder.
        settings: What decides the run's results (see `rlaifv_trl.manifest`).
        base_model: The base model, the policy of iteration 0 (Hub id, folder or `builtin:` name).
        model_repo: The Hub repository the policies are pushed to, if any (it names them in cards).
        num_iterations: The iterations the run is to have, if known.
    """

    def __init__(
        self,
        output_dir: str | Path,
        settings: dict[str, Any],
        base_model: str,
        model_repo: str | None = None,
        num_iterations: int | None = None,
    ):
        self.root = Path(output_dir)
        self.settings, self.base_model, self.model_repo = settings, base_model, model_repo
        self.num_iterations = num_iterations
        self.process = process_state()
        self._lock = RunLock(self.root)

    @classmethod
    def recorded(cls, output_dir: str | Path) -> RecipeRun:
        """The run in `output_dir` as its manifest records it, to read (no lock is taken, nothing is cleaned)."""
        manifest = Manifest.read(output_dir)
        run = cls(output_dir, manifest.settings, manifest.settings["model"]["model_name_or_path"])
        run.manifest = manifest
        return run

    def __enter__(self) -> RecipeRun:
        if self.process.is_main_process:
            self._lock.acquire()
            try:
                for leftover in remove_temporary_files(self.root):
                    logger.info("Removed %s, left half written by an earlier run", leftover)
                for folder in sorted((self.root / TRAINING_DIR).glob("iteration-*")):
                    last_complete_checkpoint(folder, remove_incomplete=True)
                self._check_iterations(Manifest.open(self.root, self.settings, layout=RUN_LAYOUT))
            except BaseException:
                self._lock.release()
                raise
        self.process.wait_for_everyone()
        self.manifest = Manifest.read(self.root)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.process.is_main_process:
            self._lock.release()

    def _check_iterations(self, manifest: Manifest) -> None:
        """Refuse fewer iterations than the folder holds (a stage of a later one is done)."""
        held = max((int(key.split("/")[0].split("-")[1]) for key in manifest.done), default=0)
        if self.num_iterations is not None and held > self.num_iterations:
            raise ValueError(
                f"{self.root} holds a run of {held} iterations: num_iterations may grow, which continues it, but not "
                f"shrink. Use num_iterations {held} or more, or another output folder."
            )

    # -- stages ------------------------------------------------------------------------------------------------------

    @staticmethod
    def key(iteration: int, stage: str) -> str:
        return f"{config_name(iteration)}/{stage}"

    def finished(self, iteration: int, stage: str) -> bool:
        return self.manifest.finished(self.key(iteration, stage))

    def result(self, iteration: int, stage: str) -> Any:
        return self.manifest.result(self.key(iteration, stage))

    def section(self, iteration: int, stage: str) -> ManifestSection:
        """The manifest's section for a step of iteration's stage `stage` that resumes on its own (the feedback,
        shard by shard): it records and checks that step's own settings (e.g. the prompts' fingerprint)."""
        return self.manifest.section(self.key(iteration, stage))

    def iterations(self) -> list[int]:
        """The iterations the manifest records a stage of, in order."""
        recorded = {key.rpartition("/")[0] for key in self.manifest.done}
        return [k for k in range(len(recorded) + 1) if config_name(k) in recorded]

    def stage(self, iteration: int, stage: str, work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `work(*args, **kwargs)` as stage `stage` of `iteration` unless it is done; record the main process's
        result once every process is done, and return it."""
        key = self.key(iteration, stage)
        if self.manifest.finished(key):
            logger.info("Iteration %d: %s already done", iteration, stage)
            return self.manifest.result(key)
        logger.info("Iteration %d: %s", iteration, stage)
        result = work(*args, **kwargs)
        self.process.wait_for_everyone()
        if self.process.is_main_process:
            self.manifest.record(key, result)
        self.process.wait_for_everyone()
        self.manifest = Manifest.read(self.root)
        return self.manifest.result(key)

    # -- where things are --------------------------------------------------------------------------------------------

    def policy(self, iteration: int) -> str:
        """The policy of `iteration`: the base model for 0, else the one `iteration` trained (iteration k + 1 starts
        from the policy of iteration k)."""
        return self.base_model if iteration == 0 else str(model_dir(self.root, iteration))

    def policy_name(self, iteration: int) -> str:
        """How cards and provenance columns name a policy: the base's own name, or the model repo's branch."""
        if iteration == 0:
            return public_name(self.base_model)
        if self.model_repo:
            return f"{self.model_repo}@{config_name(iteration)}"
        return public_name(self.policy(iteration))

    def feedback_dir(self, iteration: int) -> Path:
        return self.root / "feedback" / config_name(iteration)

    def training_dir(self, iteration: int) -> Path:
        """The checkpoints of the training of `iteration` (which produces its policy)."""
        return self.root / TRAINING_DIR / config_name(iteration)


def run_settings(script_args, feedback_args, training_args, model_args, row_validation=None) -> ResultSettings:
    """The settings that decide a run's results, listed per config class (see `rlaifv_trl.manifest`);
    `feedback_args` is `None` for a recipe without a feedback stage."""
    parts = {
        "recipe": script_args, "feedback": feedback_args, "training": training_args, "model": model_args,
        "rows": row_validation,
    }  # fmt: skip
    settings = {name: result_settings(part) for name, part in parts.items() if part is not None}
    return ResultSettings(settings, {name: part.defaults for name, part in settings.items()})
