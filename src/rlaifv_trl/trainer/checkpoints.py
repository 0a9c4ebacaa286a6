"""Loading the Trainer's own checkpoints back into vision-language models.

`transformers.Trainer` resumes (`resume_from_checkpoint`) and picks the best checkpoint (`load_best_model_at_end`)
with a raw `model.load_state_dict(..., strict=False)`. Models whose saved key names differ from their module names
(LLaVA, Qwen2-VL and other VLMs with a checkpoint conversion mapping) then load no weight at all, with only a
warning (huggingface/transformers#43701): a resumed run silently restarts from the initial weights and the "best"
model is the last one. `load_checkpoint_weights` loads such checkpoints through `from_pretrained`, which converts
the key names, and copies the weights in strictly.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from transformers import PreTrainedModel
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME


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
