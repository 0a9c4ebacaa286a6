"""The Trainer's own checkpoints: which ones are complete, loading them back into vision-language models, and the
modes of the files they hold.

`transformers.Trainer` resumes (`resume_from_checkpoint`) and picks the best checkpoint (`load_best_model_at_end`)
with a raw `model.load_state_dict(..., strict=False)`. Models whose saved key names differ from their module names
(LLaVA, Qwen2-VL and other VLMs with a checkpoint conversion mapping) then load no weight at all, with only a
warning (huggingface/transformers#43701): a resumed run silently restarts from the initial weights and the "best"
model is the last one. `load_checkpoint_weights` loads such checkpoints through `from_pretrained`, which converts
the key names, and copies the weights in strictly. `CheckpointsMixin` puts this (and the file modes) into every
trainer of the project.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
import zipfile
from pathlib import Path

from safetensors import safe_open
from transformers import PreTrainedModel
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

from ..atomic_io import follow_umask_files


logger = logging.getLogger(__name__)

# What a checkpoint's weights are saved as: full model, PEFT adapter (safetensors or not), or DeepSpeed's own folder.
_WEIGHTS = (
    "model*.safetensors",
    "adapter_model.safetensors",
    "pytorch_model*.bin",
    "adapter_model.bin",
    "global_step*",
)


def saved_weight_names(folder: str | Path) -> set[str] | None:
    """The weight names of the safetensors checkpoint in `folder` (one file or shards), or None if there is none."""
    folder = Path(folder)
    if (folder / SAFE_WEIGHTS_INDEX_NAME).is_file():
        return set(json.loads((folder / SAFE_WEIGHTS_INDEX_NAME).read_text())["weight_map"])
    if (folder / SAFE_WEIGHTS_NAME).is_file():
        with safe_open(str(folder / SAFE_WEIGHTS_NAME), framework="pt") as checkpoint:
            return set(checkpoint.keys())
    return None


def needs_key_conversion(model: PreTrainedModel, folder: str | Path) -> bool:
    """Whether the safetensors checkpoint in `folder` names its weights differently than `model` does."""
    saved = saved_weight_names(folder) if isinstance(model, PreTrainedModel) else None
    return saved is not None and not saved <= set(model.state_dict())


def load_checkpoint_weights(model: PreTrainedModel, folder: str | Path) -> bool:
    """Copy the weights of the checkpoint in `folder` into `model` through `from_pretrained`'s key conversion.

    Returns False (and does nothing) when the checkpoint needs no conversion, so the Trainer's own loading applies.
    Holds a second copy of the weights in CPU memory while it runs.
    """
    if not needs_key_conversion(model, folder):
        return False
    parameter = next(model.parameters())
    loaded = type(model).from_pretrained(folder, dtype=parameter.dtype)
    model.load_state_dict(loaded.state_dict(), strict=True)
    return True


class CheckpointsMixin:
    """A `transformers.Trainer` mixin (put it before the trainer class) that makes checkpoints round-trip:

    - resuming (`train(resume_from_checkpoint=...)`) and `load_best_model_at_end` load the checkpoint's weights even
      when its key names need converting (`load_checkpoint_weights`); DeepSpeed and FSDP keep their own loading;
    - the safetensors files a save writes get the modes of the process's umask as soon as they are written, before
      the checkpoint's `trainer_state.json` (written last) makes it complete: safetensors 0.8 creates its files
      readable by their owner only (safetensors/safetensors#782), whatever the umask.
    """

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if (
            self.is_deepspeed_enabled
            or self.is_fsdp_enabled
            or not load_checkpoint_weights(model or self.model, resume_from_checkpoint)
        ):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        if self.is_deepspeed_enabled or self.is_fsdp_enabled or not load_checkpoint_weights(self.model, best):
            super()._load_best_model()

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            follow_umask_files(Path(output_dir if output_dir is not None else self.args.output_dir), "*.safetensors")


def is_complete_checkpoint(folder: str | Path) -> bool:
    """Whether a `Trainer` checkpoint folder was written to the end and every file in it is whole.

    `Trainer` writes the weights, the optimizer, scheduler and RNG states, and `trainer_state.json` last, straight
    into `checkpoint-<step>`; a run killed meanwhile leaves a folder that cannot be resumed from. Complete means:
    `trainer_state.json` parses, some weights are there (model, adapter or DeepSpeed), every safetensors file has a
    readable header and the size that header announces, every torch file (a zip archive) has its central directory,
    every JSON file parses and every shard a weights index lists exists. The check reads headers and directories only, not the tensors.
    """
    folder = Path(folder)
    try:
        json.loads((folder / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".safetensors" and not _whole_safetensors(path):
            return False
        if path.suffix in (".pt", ".pth", ".bin") and not _whole_zip(path):
            return False
        if path.suffix == ".json":
            try:
                content = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return False
            if path.name.endswith(".index.json"):  # every shard it lists must be there
                if not all((path.parent / shard).is_file() for shard in set(content.get("weight_map", {}).values())):
                    return False
    return any(any(folder.glob(pattern)) for pattern in _WEIGHTS)


def last_complete_checkpoint(output_dir: str | Path, remove_incomplete: bool = False) -> str | None:
    """The latest complete checkpoint under `output_dir` (see `is_complete_checkpoint`), or `None`.

    With `remove_incomplete`, later checkpoints that are not complete (left by a killed run) are deleted, so that
    nothing picks them up afterwards.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    checkpoints = sorted(
        (path for path in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if path.name.split("-")[-1].isdigit()),
        key=lambda path: int(path.name.split("-")[-1]),
        reverse=True,
    )
    for checkpoint in checkpoints:
        if is_complete_checkpoint(checkpoint):
            return str(checkpoint)
        if remove_incomplete:
            logger.warning("Removing %s: it was not written to the end (the run was stopped while saving)", checkpoint)
            shutil.rmtree(checkpoint)
    return None


def _whole_safetensors(path: Path) -> bool:
    """A safetensors file whose header parses and whose size is what the header says."""
    try:
        with open(path, "rb") as stream:
            header_size = struct.unpack("<Q", stream.read(8))[0]
            header = json.loads(stream.read(header_size))
        end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        return path.stat().st_size == 8 + header_size + end
    except (OSError, ValueError, KeyError, struct.error, TypeError):
        return False


def _whole_zip(path: Path) -> bool:
    """A torch file (zip archive) whose central directory, at the end of the file, can be read."""
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
