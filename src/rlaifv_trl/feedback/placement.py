"""Which process runs which shards of a stage, and how the others wait.

A stage whose vLLM engines span `t` GPUs (`FeedbackConfig.vllm_tensor_parallel_size`) under N processes splits
the processes into N / t groups of t consecutive ranks: each group's first rank drives one engine over the GPUs of
its group and runs the group's shards (shard i on group i mod (N / t)); the other ranks of the group start nothing
and wait. With t = N one engine on the main process runs every shard. A stage on transformers, or on engines of one
GPU, runs shard i on process i mod N. Which shards a process runs never changes what they hold (every draw is seeded
per prompt), so a run resumed with other processes or another `t` gives the same output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from accelerate import PartialState


# How long a waiting process waits for the others: a stage run by group leaders may take hours. A process that fails
# ends the whole launch (torchrun stops the others), so the limit only bounds a hang.
WAIT_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class StagePlacement:
    """The shards of a stage over `num_processes` processes in groups of `group_size` consecutive ranks.

    Args:
        num_processes: Processes of the run.
        group_size: Ranks one engine spans; the group's first rank runs the group's shards.
    """

    num_processes: int
    group_size: int = 1

    def __post_init__(self) -> None:
        if self.group_size < 1 or self.num_processes % self.group_size:
            raise ValueError(
                f"vllm_tensor_parallel_size ({self.group_size}) must divide the number of processes "
                f"({self.num_processes}): each engine spans the GPUs of a group of that many processes"
            )

    @property
    def num_groups(self) -> int:
        return self.num_processes // self.group_size

    def owner(self, shard: int) -> int:
        """The rank that runs `shard`."""
        return (shard % self.num_groups) * self.group_size

    def shards(self, process_index: int, num_shards: int) -> list[int]:
        """The shards `process_index` runs, in order: none unless it leads its group."""
        if process_index % self.group_size:
            return []
        return list(range(process_index // self.group_size, num_shards, self.num_groups))


def engine_group_size(tensor_parallel_size: int, num_processes: int, processes_per_node: int | None = None) -> int:
    """The ranks a vLLM engine of `tensor_parallel_size` GPUs spans among `num_processes` processes,
    `processes_per_node` of them on each node (default: all): 1 in a single process (it drives all its GPUs), else
    `tensor_parallel_size`, which must divide the processes of a node so that no group spans two nodes."""
    if num_processes == 1:
        return 1
    per_node = processes_per_node or num_processes
    if per_node % tensor_parallel_size or num_processes % per_node:
        raise ValueError(
            f"vllm_tensor_parallel_size ({tensor_parallel_size}) must divide the processes of each node ({per_node} "
            f"of {num_processes}): one engine spans the GPUs of a group of that many processes on one node"
        )
    return tensor_parallel_size


def processes_per_node(state: PartialState) -> int:
    """The processes on this process's node (`LOCAL_WORLD_SIZE`, which torchrun and accelerate launch set)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))


def free_cached_memory() -> None:
    """Give the GPU memory PyTorch holds cached but unused back to the device, for a vLLM engine to take."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Waiting:
    """Barriers of processes that wait while others run a stage.

    With `long_waits` (some stage runs on group leaders only) the barrier is on a gloo group with `WAIT_TIMEOUT`:
    the waiting ranks hold no GPU collective, which NCCL's watchdog would end after the process group's timeout
    (30 minutes under accelerate). Otherwise the barrier is accelerate's. Use as a context manager, entered by every
    process.
    """

    def __init__(self, state: PartialState, long_waits: bool):
        self.state = state
        self.long_waits = long_waits and state.num_processes > 1 and dist.is_initialized()
        self.group = None

    def __enter__(self) -> Waiting:
        if self.long_waits:
            self.group = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.group is not None:
            dist.destroy_process_group(self.group)
            self.group = None

    def wait(self) -> None:
        """Until every process gets here; with long waits, first hands this process's cached GPU memory back (an
        engine of its group may need it)."""
        if self.group is not None:
            free_cached_memory()
            dist.barrier(group=self.group)
        else:
            self.state.wait_for_everyone()
