"""The on-disk layout of a run's publishable artifacts, identical to their layout on the Hub.

```
<root>/
  dataset/                          one dataset repository, one config per iteration
    README.md                       dataset card (YAML `configs` lists every config)
    iteration-1/train-00000-of-00001.parquet   pairs sampled from the base model: they train iteration 1
    iteration-1-rankings/...        the iteration's candidates ranked per prompt (feedback runs only)
    iteration-2/...                 pairs sampled from the policy of iteration 1: they train iteration 2
  models/
    iteration-1/                    the policy trained in iteration 1 (model, processor, README.md model card)
    iteration-2/...
```

The folder is the source of truth: pushing to the Hub mirrors it (`rlaifv_trl.hub`), and `load_dataset(<root>/dataset,
"iteration-1")` reads it exactly as `load_dataset(<repo>, "iteration-1")` reads the pushed copy. Locally, prefer
`rlaifv_trl.load_preference_dataset(<root>/dataset, name="iteration-1")`: `load_dataset` caches local folders by
folder and config name only, so two runs' `dataset/` folders would share one cached copy.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from datasets import Dataset
from datasets.table import embed_table_storage
from datasets.utils.py_utils import convert_file_size_to_int

from .atomic_io import atomic_directory


DATASET_DIR = "dataset"
MODELS_DIR = "models"


def config_name(iteration: int) -> str:
    """The dataset config (and model branch) name of an iteration: "iteration-<k>"."""
    return f"iteration-{iteration}"


def rankings_config_name(iteration: int) -> str:
    """The dataset config of an iteration's rankings: "iteration-<k>-rankings"."""
    return f"{config_name(iteration)}-rankings"


def dataset_dir(root: str | Path) -> Path:
    return Path(root) / DATASET_DIR


def model_dir(root: str | Path, iteration: int) -> Path:
    return Path(root) / MODELS_DIR / config_name(iteration)


def write_iteration_dataset(
    dataset: Dataset,
    root: str | Path,
    iteration: int,
    split: str = "train",
    max_shard_size: str | int = "500MB",
    rankings: bool = False,
) -> list[Path]:
    """Write an iteration's preference data (with `rankings`, its rankings) as parquet shards, replacing any earlier
    copy.

    Images are stored as their bytes, without the names or paths of the files they came from (the data is published).
    Shards are written to a temporary folder and moved into place only when all of them are complete, so a killed
    run never leaves a partial config behind.
    """
    target = dataset_dir(root) / (rankings_config_name(iteration) if rankings else config_name(iteration))
    num_shards = max(1, int(dataset.data.nbytes / convert_file_size_to_int(max_shard_size)) + 1)
    with atomic_directory(target) as scratch:
        for index in range(num_shards):
            shard = dataset.shard(num_shards=num_shards, index=index, contiguous=True).with_format("arrow")
            shard = shard.map(embed_table_storage, batched=True, keep_in_memory=True)
            shard = shard.map(drop_image_paths, batched=True, keep_in_memory=True)
            shard.to_parquet(scratch / f"{split}-{index:05d}-of-{num_shards:05d}.parquet")
    return sorted(target.glob("*.parquet"))


def dataset_configs(root: str | Path, split: str = "train") -> list[dict]:
    """The YAML `configs` entries for every config written under `root` (what `load_dataset` reads): by iteration,
    each iteration's pairs before its rankings."""
    configs = []
    folders = [p for p in dataset_dir(root).glob("iteration-*") if p.name.split("-")[1].isdigit()]
    for folder in sorted(folders, key=lambda p: (int(p.name.split("-")[1]), p.name)):
        if any(folder.glob("*.parquet")):
            configs.append(
                {"config_name": folder.name, "data_files": [{"split": split, "path": f"{folder.name}/{split}-*"}]}
            )
    return configs


def drop_image_paths(table: pa.Table) -> pa.Table:
    """The table with the `path` of every stored image (a `{bytes, path}` struct, or a list of them) set to null."""
    for index, field in enumerate(table.schema):
        column = table.column(index)
        chunks = [_without_paths(chunk) for chunk in column.chunks]
        if any(new is not old for new, old in zip(chunks, column.chunks)):
            table = table.set_column(index, field, pa.chunked_array(chunks, type=field.type))
    return table


def _without_paths(array: pa.Array) -> pa.Array:
    kind = array.type
    if pa.types.is_struct(kind) and {kind.field(i).name for i in range(kind.num_fields)} == {"bytes", "path"}:
        children = [array.field("bytes"), pa.nulls(len(array), kind.field("path").type)]
        return pa.StructArray.from_arrays(children, fields=list(kind), mask=array.is_null())
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        values = _without_paths(array.values)
        if values is not array.values:
            return type(array).from_arrays(array.offsets, values, mask=array.is_null())
    return array
