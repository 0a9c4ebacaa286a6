"""Published preference datasets in the project's format (TRL's conversational vision preference format).

`load_preference_dataset` reads, from the Hub or a local folder, and also as a stream:
- the schema of openbmb/RLAIF-V-Dataset (`ds_name, image, question, chosen, rejected, origin_dataset,
  origin_split, idx, image_path`);
- TRL's conversational vision format (trl-lib/rlaif-v, HuggingFaceH4/rlaif-v_formatted): `prompt`, `images` (or
  `image`), `chosen`, `rejected` as messages;
- the project's own pushed datasets (TRL's format plus provenance columns, one config per iteration);
and returns rows with `prompt`, `images`, `chosen`, `rejected` as messages, keeping every other column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset, IterableDataset, load_dataset


PREFERENCE_COLUMNS = ("prompt", "images", "chosen", "rejected")
OPENBMB_COLUMNS = ("image", "question", "chosen", "rejected")


def user_turn(text: str, num_images: int = 1) -> list[dict[str, Any]]:
    """A user turn with `num_images` image placeholders followed by `text`."""
    content = [{"type": "image", "text": None} for _ in range(num_images)] + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


def assistant_turn(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def detect_schema(columns: list[str] | tuple[str, ...]) -> str:
    """ "openbmb" or "trl" from the column names; a clear error naming what is missing otherwise."""
    columns = set(columns)
    if "question" in columns and set(OPENBMB_COLUMNS) <= columns:
        return "openbmb"
    if {"prompt", "chosen", "rejected"} <= columns and ({"images", "image"} & columns):
        return "trl"
    raise ValueError(
        f"Not a vision preference dataset: columns {sorted(columns)}. Expected either openbmb/RLAIF-V-Dataset's "
        f"{list(OPENBMB_COLUMNS)} or TRL's ['prompt', 'images' (or 'image'), 'chosen', 'rejected']."
    )


def _from_openbmb(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "prompt": user_turn(row["question"]),
        "images": [row["image"]],
        "chosen": assistant_turn(row["chosen"]),
        "rejected": assistant_turn(row["rejected"]),
        "prompt_id": f"{row.get('ds_name') or 'rlaif-v'}-{row.get('idx')}",
    }


def _from_trl(row: dict[str, Any]) -> dict[str, Any]:
    images = row["images"] if "images" in row else [row["image"]]
    prompt = row["prompt"]
    return {
        "prompt": user_turn(prompt, len(images)) if isinstance(prompt, str) else prompt,
        "images": images,
        "chosen": assistant_turn(row["chosen"]) if isinstance(row["chosen"], str) else row["chosen"],
        "rejected": assistant_turn(row["rejected"]) if isinstance(row["rejected"], str) else row["rejected"],
    }


def to_preference_format(dataset: Dataset | IterableDataset) -> Dataset | IterableDataset:
    """Convert a dataset of a known schema (see `detect_schema`) to the project's format, keeping other columns."""
    columns = dataset.column_names
    if columns is None:  # a stream whose features are unknown: peek at the first row
        columns = list(next(iter(dataset)).keys())
    schema = detect_schema(columns)
    if schema == "openbmb":
        return dataset.map(_from_openbmb, remove_columns=["image", "question"])
    needs_conversion = "image" in columns or "images" not in columns
    if not needs_conversion:
        first = next(iter(dataset.take(1) if isinstance(dataset, IterableDataset) else dataset.select(range(1))))
        needs_conversion = any(isinstance(first[key], str) for key in ("prompt", "chosen", "rejected"))
    if not needs_conversion:
        return dataset
    return dataset.map(_from_trl, remove_columns=[c for c in ("image",) if c in columns])


def load_preference_dataset(
    name_or_path: str,
    split: str = "train",
    name: str | None = None,
    streaming: bool = False,
    revision: str | None = None,
    **load_kwargs: Any,
) -> Dataset | IterableDataset:
    """Load a published vision preference dataset in the project's format.

    Args:
        name_or_path: Hub dataset id (e.g. "openbmb/RLAIF-V-Dataset", "trl-lib/rlaif-v", a run's dataset repo) or a
            local folder.
        split: Split to load.
        name: Config to load (a run's "iteration-<k>").
        streaming: Return an `IterableDataset` that reads as it goes.
        revision: Git revision of a Hub dataset.
        **load_kwargs: Passed to `datasets.load_dataset`.
    """
    local_files = (
        sorted(Path(name_or_path, name).glob(f"{split}-*.parquet")) if name and Path(name_or_path).is_dir() else []
    )
    if local_files:
        # A run folder: read its parquet files directly. `load_dataset(folder, config)` caches by folder name and
        # config only, so two run folders named alike would share (and return) one cached copy.
        dataset = load_dataset(
            "parquet",
            data_files={split: [str(f) for f in local_files]},
            split=split,
            streaming=streaming,
            **load_kwargs,
        )
    else:
        dataset = load_dataset(name_or_path, name, split=split, streaming=streaming, revision=revision, **load_kwargs)
    return to_preference_format(dataset)
