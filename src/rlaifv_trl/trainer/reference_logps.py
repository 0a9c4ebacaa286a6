"""Reference log-probabilities of a vision preference dataset, computed once and stored as dataset columns.

RLAIF-V computes the reference model's log-probabilities of every chosen and rejected answer once per iteration and
keeps them with the data, so DPO training needs no reference forward pass and no reference model in memory. TRL
does this for text datasets only; `precompute_ref_log_probs` does it for vision datasets, in the format
`trl.DPOTrainer` reads: float32 columns `ref_chosen_logps` and `ref_rejected_logps` holding the summed log-probs of
each answer (as the chat template renders it, truncated to `max_length` like in training), computed under the
training's mixed precision as `trl.DPOTrainer` computes them (bf16 autocast under `bf16`). The columns travel with
the dataset: `save_to_disk`, `push_to_hub`.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import gather, tqdm
from datasets import Dataset, IterableDataset, Value
from torch.utils.data import DataLoader
from transformers import ProcessorMixin

from ..log_probs import completion_log_probs, reference_context
from .collator import REF_COLUMNS, ROW_INDEX_KEY, DataCollatorForVisionPreferenceWithRef


def mixed_precision_dtype(args: Any) -> torch.dtype | None:
    """The autocast dtype of a training config: bfloat16 under `bf16`, float16 under `fp16`, else `None`."""
    if getattr(args, "bf16", False):
        return torch.bfloat16
    return torch.float16 if getattr(args, "fp16", False) else None


def has_ref_log_probs(dataset: Dataset | IterableDataset) -> bool:
    """Whether `dataset` carries both reference log-probability columns."""
    columns = dataset.column_names or list(next(iter(dataset)).keys())
    return all(column in columns for column in REF_COLUMNS)


class _IndexedRows(torch.utils.data.Dataset):
    """The rows `indices` of a dataset, each tagged with its index (so that errors can name it)."""

    def __init__(self, dataset: Dataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict:
        index = self.indices[position]
        return {**self.dataset[index], ROW_INDEX_KEY: index}


def _shard(num_rows: int, num_processes: int, process_index: int) -> list[int]:
    """A process's contiguous share of the rows, padded to the same length on every process.

    Equal shares keep the processes in step (each runs the same number of forward passes, which FSDP requires); the
    padding repeats the last row, whose duplicate is dropped when the shares are gathered.
    """
    share = math.ceil(num_rows / num_processes)
    indices = list(range(process_index * share, min((process_index + 1) * share, num_rows)))
    return indices + [num_rows - 1] * (share - len(indices))


@torch.no_grad()
def precompute_ref_log_probs(
    model: torch.nn.Module,
    processor: ProcessorMixin,
    dataset: Dataset,
    batch_size: int = 8,
    max_length: int | None = None,
    num_workers: int = 0,
    desc: str = "Computing reference log probs",
    autocast_dtype: torch.dtype | None = None,
) -> Dataset:
    """Add the reference model's log-probabilities of each chosen and rejected answer to a vision preference dataset.

    Args:
        model: The reference model (the policy at the start of the iteration). A PEFT model is used with its adapter
            disabled (its base), or with its frozen "ref" adapter when it has one, like `trl.DPOTrainer` does.
        processor: The processor the policy is trained with.
        dataset: Rows in TRL's vision preference format (`images` or `image`, `prompt`, `chosen`, `rejected`).
            Existing `ref_chosen_logps` / `ref_rejected_logps` columns are replaced.
        batch_size: Rows per forward pass (each row runs its chosen and its rejected answer).
        max_length: The `max_length` the policy is trained with: answers are truncated as in training. A row whose
            whole answer would be cut raises a `ValueError` naming it.
        num_workers: Data loading worker processes (images are decoded and processed on the fly).
        desc: Label of the progress bar (shown on the main process).
        autocast_dtype: The training's mixed precision (`mixed_precision_dtype(args)`: `torch.bfloat16` under
            `bf16`): the forward passes run under `torch.autocast` in it, as `trl.DPOTrainer` computes reference
            log-probs (`accelerator.autocast()`), so a float32 model trained in bf16 gets bf16-speed reference passes
            and the values training would compute. `None`: the model's own dtype.

    Returns:
        `dataset` with float32 columns `ref_chosen_logps` and `ref_rejected_logps`. Under `torchrun` or
        `accelerate launch`, each process computes a contiguous share of the rows and every process returns the whole
        dataset.
    """
    if isinstance(dataset, IterableDataset):
        raise TypeError("precompute_ref_log_probs needs a map-style `datasets.Dataset`, not an `IterableDataset`")
    state = PartialState()
    dataset = dataset.remove_columns([column for column in REF_COLUMNS if column in dataset.column_names])
    if len(dataset) == 0:
        raise ValueError("The dataset is empty")
    collator = DataCollatorForVisionPreferenceWithRef(processor=processor, max_length=max_length)
    indices = _shard(len(dataset), state.num_processes, state.process_index)
    loader = DataLoader(
        _IndexedRows(dataset, indices), batch_size=batch_size, collate_fn=collator, num_workers=num_workers
    )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums: list[torch.Tensor] = []
    autocast = (
        torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()
    )
    try:
        with reference_context(model), autocast:
            progress = tqdm(loader, desc=desc, disable=bool(os.environ.get("TQDM_DISABLE")))  # main process only
            for batch in progress:
                batch = {key: value.to(device) for key, value in batch.items()}
                chosen, rejected = completion_log_probs(model, batch).sum(dim=1).chunk(2)
                sums.append(torch.stack([chosen, rejected], dim=1))
    finally:
        model.train(was_training)
    shares = torch.cat(sums).cpu()  # (share, 2): this process's rows, in order
    if state.num_processes > 1:  # every process gets every share, in process order
        shares = gather(shares.to(state.device)).cpu()
        indices = [i for rank in range(state.num_processes) for i in _shard(len(dataset), state.num_processes, rank)]
    first_position: dict[int, int] = {}
    for position, index in enumerate(indices):  # shares are contiguous: first occurrences come in row order
        first_position.setdefault(index, position)
    values = shares[torch.tensor(list(first_position.values()))].float()
    feature = Value("float32")
    for position, column in enumerate(REF_COLUMNS):
        dataset = dataset.add_column(column, values[:, position].tolist(), feature=feature)
    return dataset
