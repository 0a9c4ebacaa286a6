"""Checkpoints saved by the project's transformers, as vLLM's model loaders expect them.

transformers 5 saves the CLIP vision tower of the LLaVA family (LLaVA, LLaVA-NeXT) as `vision_tower.<name>`; vLLM's
loaders (0.32, with transformers 5.19) look for the layout of the Hub checkpoints, `vision_tower.vision_model.<name>`.
`vllm_loadable` gives vLLM a folder it can read: the model folder itself when nothing needs renaming, otherwise a copy
whose weight files are renamed shard by shard (memory bounded by the largest shard) and whose other files are links to
the original. transformers loads both layouts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from ..atomic_io import atomic_directory


# model_type -> (prefix vLLM finds, prefix it expects)
_RENAMES = {
    "llava": ("vision_tower.", "vision_tower.vision_model."),
    "llava_next": ("vision_tower.", "vision_tower.vision_model."),
}


def _rename(key: str, old: str, new: str) -> str:
    return new + key[len(old) :] if key.startswith(old) and not key.startswith(new) else key


def needs_conversion(model_dir: str | os.PathLike) -> bool:
    """Whether the model folder holds weights under names vLLM's loader for its family does not know."""
    model_dir = Path(model_dir)
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        return False  # a Hub id: published checkpoints have the layout vLLM expects
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type not in _RENAMES:
        return False
    old, new = _RENAMES[model_type]
    for shard in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as weights:
            if any(_rename(key, old, new) != key for key in weights.keys()):
                return True
    return False


def vllm_loadable(model_dir: str | os.PathLike, cache_dir: str | os.PathLike) -> str:
    """A folder vLLM can load the model from: `model_dir` itself, or a converted copy kept in `cache_dir` (reused
    while the source's weight files are unchanged)."""
    if not needs_conversion(model_dir):
        return str(model_dir)
    source = Path(model_dir).resolve()
    model_type = json.loads((source / "config.json").read_text())["model_type"]
    old, new = _RENAMES[model_type]
    shards = sorted(source.glob("*.safetensors"))
    stamp = hashlib.sha256(
        "".join(f"{shard}:{shard.stat().st_size}:{shard.stat().st_mtime_ns}" for shard in shards).encode()
    ).hexdigest()[:16]
    target = Path(cache_dir) / f"{source.name}-{stamp}"
    if target.is_dir():
        return str(target)
    with atomic_directory(target) as staging:
        for item in source.iterdir():
            if item.suffix == ".safetensors" or item.name.startswith("."):
                continue
            if item.name == "model.safetensors.index.json":
                index = json.loads(item.read_text())
                index["weight_map"] = {_rename(k, old, new): v for k, v in index["weight_map"].items()}
                (staging / item.name).write_text(json.dumps(index, indent=2))
            elif item.is_file():
                os.symlink(item, staging / item.name)
            else:
                shutil.copytree(item, staging / item.name)
        for shard in shards:
            with safe_open(str(shard), "pt") as weights:
                tensors = {_rename(key, old, new): weights.get_tensor(key) for key in weights.keys()}
                metadata = weights.metadata()
            save_file(tensors, str(staging / shard.name), metadata=metadata)
    return str(target)
