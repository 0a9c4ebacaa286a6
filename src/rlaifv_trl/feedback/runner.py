"""`FeedbackRunner`: a `FeedbackPipeline` run shard by shard in an output folder, resumable and spread over processes.

Each stage runs shard by shard, and every shard's payload is saved atomically under `output_dir/<stage>/`
(`ShardStore`): a rerun skips the finished shards. Under `torchrun` / `accelerate launch` the shards are spread over
the processes (shard i on process i mod N; for a stage whose vLLM engines span the GPUs of t processes, on the first
rank of group i mod (N / t) while the others wait, `rlaifv_trl.feedback.placement`) and the main process merges them;
since every random draw is seeded per prompt, the output does not depend on N or on which process runs a shard. The settings that decide the results are checked on a rerun, and the folder
is used by one run at a time:

- standalone, the runner takes the folder's lock (`RunLock`), sweeps what a killed writer left, and checks its
  settings against the folder's own `manifest.json`;
- inside a run that holds the lock of a folder containing `output_dir` (the recipe's), the caller hands over a
  section of its manifest (`Manifest.section`), where the settings are checked instead.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from accelerate import PartialState
from datasets import Dataset, load_from_disk
from tqdm.auto import tqdm

from ..atomic_io import atomic_directory, remove_temporary_files
from ..manifest import Manifest, ManifestSection, ResultSettings, result_settings
from ..run_lock import RunLock
from .backend_factory import process_state
from .inputs import FeedbackInputs
from .merge import FeedbackOutput
from .pipeline import STAGES, FeedbackPipeline
from .placement import StagePlacement, Waiting, engine_group_size, processes_per_node
from .report import RunReport
from .shards import ShardStore


logger = logging.getLogger(__name__)


class FeedbackRunner:
    """Runs `pipeline` over a dataset in an output folder (see the module's docstring).

    Args:
        pipeline: The stages.
        state: The process this runs in (default: this one, as `torchrun` or `accelerate launch` started it).
    """

    def __init__(self, pipeline: FeedbackPipeline, state: PartialState | None = None):
        self.pipeline = pipeline
        self.state = state or process_state()

    def run(
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
        """Every stage on `dataset`, saved in `output_dir` (arguments as `RLAIFVFeedbackGenerator.generate`);
        `section`: the caller's manifest section for this run, whose folder's lock the caller holds."""
        inputs = self.pipeline.inputs(dataset, seed, iteration, strict)
        temporary = output_dir is None
        if temporary and self.state.num_processes > 1:
            raise ValueError("Pass an output_dir when running on several processes: they share it")
        store = ShardStore(tempfile.mkdtemp(prefix="rlaifv-feedback-") if temporary else output_dir)
        try:
            with self._claimed(store, inputs, temporary, section, overwrite_output_dir):
                output = self._run(store, inputs, disable_tqdm, None if temporary else store.root)
        finally:
            if temporary:
                shutil.rmtree(store.root, ignore_errors=True)
        return output

    @contextlib.contextmanager
    def _claimed(
        self,
        store: ShardStore,
        inputs: FeedbackInputs,
        temporary: bool,
        section: ManifestSection | None,
        overwrite: bool,
    ) -> Iterator[None]:
        """The folder, used by this run only, holding only results of its settings."""
        with contextlib.ExitStack() as stack:
            if self.state.is_main_process and not temporary:
                settings = feedback_settings(self.pipeline, inputs)
                if section is None:
                    stack.enter_context(RunLock(store.root))
                    remove_temporary_files(store.root)
                    restarted = Manifest.open(store.root, settings, overwrite).restarted
                else:  # the caller holds the lock (and swept the folder when taking it)
                    restarted = section.open(settings, overwrite)
                if restarted:
                    store.clear()
            self.state.wait_for_everyone()
            yield

    def _run(
        self, store: ShardStore, inputs: FeedbackInputs, disable_tqdm: bool, output_dir: Path | None
    ) -> FeedbackOutput:
        state = self.state
        num_shards = math.ceil(len(inputs.dataset) / self.pipeline.args.shard_size)
        placements = {stage: self.placement(stage) for stage in STAGES}
        wall: dict[str, float] = {}
        with Waiting(state, long_waits=any(p.group_size > 1 for p in placements.values())) as waiting:
            for stage, following in zip(STAGES, (*STAGES[1:], None)):
                start = time.perf_counter()
                mine = placements[stage].shards(state.process_index, num_shards)
                try:
                    self._run_stage(store, stage, mine, inputs, disable_tqdm)
                finally:
                    self.pipeline.close_engines()  # a vLLM engine frees its memory before the next stage and training
                if following is None or placements[following] != placements[stage]:
                    waiting.wait()  # every shard of the stage is written: the next stage may run it elsewhere
                wall[stage] = time.perf_counter() - start

        if state.is_main_process:
            start = time.perf_counter()
            batches = ({stage: store.read(stage, shard) for stage in STAGES} for shard in range(num_shards))
            report = RunReport(num_rows=len(inputs.dataset), num_processes=state.num_processes)
            output = self.pipeline.output(inputs, batches, report)
            wall["pairs"] = time.perf_counter() - start
            output.report.wall_seconds = wall
            output.output_dir = output_dir
            if output_dir is not None:
                for name in ("preference", "audit", "rankings"):
                    _save_dataset(getattr(output, name), output_dir / name)
                output.report.save(output_dir / "report.json")
        state.wait_for_everyone()
        if not state.is_main_process:
            output = FeedbackOutput(
                load_from_disk(str(output_dir / "preference")),
                load_from_disk(str(output_dir / "audit")),
                RunReport.load(output_dir / "report.json"),
                output_dir,
                load_from_disk(str(output_dir / "rankings")),
            )
        return output

    def placement(self, stage: str) -> StagePlacement:
        """Which process runs which shards of `stage`: engines spanning several processes' GPUs run the shards of
        their group in its first rank (`rlaifv_trl.feedback.placement`), anything else its own process's."""
        group_size = 1
        if self.pipeline.engines(stage):
            tensor_parallel_size, state = self.pipeline.args.vllm_tensor_parallel_size, self.state
            group_size = engine_group_size(tensor_parallel_size, state.num_processes, processes_per_node(state))
        return StagePlacement(self.state.num_processes, group_size)

    def _run_stage(
        self, store: ShardStore, stage: str, shards: list[int], inputs: FeedbackInputs, disable_tqdm: bool
    ) -> None:
        todo = [shard for shard in shards if not store.done(stage, shard)]
        if len(todo) < len(shards):
            logger.info("%s: %d of %d shard(s) already done", stage, len(shards) - len(todo), len(shards))
        size, num_rows = self.pipeline.args.shard_size, len(inputs.dataset)
        bounds = {shard: (shard * size, min((shard + 1) * size, num_rows)) for shard in todo}
        total = sum(stop - start for start, stop in bounds.values())
        disable = disable_tqdm or not self.state.is_main_process
        with tqdm(total=total, desc=f"RLAIF-V {stage}", unit="prompt", disable=disable) as progress:
            for shard in todo:
                logger.debug("%s: shard %d started", stage, shard)
                start = time.perf_counter()
                earlier = {name: store.read(name, shard) for name in STAGES[: STAGES.index(stage)]}
                done = progress.n
                payload = self.pipeline.run_stage(stage, inputs, *bounds[shard], earlier, progress.update)
                progress.update(bounds[shard][1] - bounds[shard][0] - (progress.n - done))  # the rows skipped before
                payload["seconds"] = time.perf_counter() - start
                payload["process_index"] = self.state.process_index
                store.write(stage, shard, payload)


def feedback_settings(pipeline: FeedbackPipeline, inputs: FeedbackInputs) -> ResultSettings:
    """What decides a feedback run's results: the config's result fields, the models, the prompts, seed, iteration."""
    config = result_settings(pipeline.args)
    dataset = inputs.dataset
    return ResultSettings(
        {
            **config,
            **pipeline.provenance,
            "seed": inputs.seed,
            "iteration": inputs.iteration,
            "dataset": {
                "fingerprint": getattr(dataset, "_fingerprint", None),
                "num_rows": len(dataset),
                "columns": dataset.column_names,
            },
        },
        config.defaults,
    )


def _save_dataset(dataset: Dataset, path: Path) -> None:
    """Save with `save_to_disk` into a temporary folder moved into place, so that `path` is never half written."""
    with atomic_directory(path) as scratch:
        dataset.save_to_disk(str(scratch), num_shards=1 if len(dataset) == 0 else None)  # an empty one loads too
