"""Published preference datasets in the project's format (TRL's conversational vision preference format).

`load_preference_dataset` reads, from the Hub or a local folder, and also as a stream:
- the schema of openbmb/RLAIF-V-Dataset (`ds_name, image, question, chosen, rejected, origin_dataset,
  origin_split, idx, image_path`);
- TRL's conversational vision format (trl-lib/rlaif-v, HuggingFaceH4/rlaif-v_formatted): `prompt`, `images` (or
  `image`), `chosen`, `rejected` as messages;
- the project's own pushed datasets (TRL's format plus provenance columns, one config per iteration);
and returns rows with `prompt`, `images`, `chosen`, `rejected` as messages, keeping every other column.

A run's rankings configs (`iteration-<k>-rankings`: `prompt`, `images`, `candidates`, `scores`, `ranking`, `ranks`,
... see `rlaifv_trl.feedback.outputs`) are read by `load_ranking_dataset`; `load_preference_dataset` recognises their
columns and hands them to it, so either function reads either kind of config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset, Features, IterableDataset, List, Value, load_dataset
from datasets import Image as ImageFeature

from .cards import public_name
from .validation import (
    RowValidation,
    ValidationReport,
    check_preference_row,
    check_ranking_row,
    decoded,
    undecoded,
    validate_dataset,
)


PREFERENCE_COLUMNS = ("prompt", "images", "chosen", "rejected")
OPENBMB_COLUMNS = ("image", "question", "chosen", "rejected")
RANKING_COLUMNS = ("prompt", "images", "candidates", "ranking", "ranks")


def user_turn(text: str, num_images: int = 1) -> list[dict[str, Any]]:
    """A user turn with `num_images` image placeholders followed by `text`."""
    content = [{"type": "image", "text": None} for _ in range(num_images)] + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


def assistant_turn(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def is_ranking_schema(columns: list[str] | tuple[str, ...]) -> bool:
    """Whether the columns are those of a rankings config (`RANKING_COLUMNS`)."""
    return set(RANKING_COLUMNS) <= set(columns)


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


MESSAGES = List({"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})})


def to_preference_format(dataset: Dataset | IterableDataset) -> Dataset | IterableDataset:
    """Convert a dataset of a known schema (see `detect_schema`) to the project's format, keeping other columns.

    Image columns are left undecoded through the conversion, so that images keep their original bytes (a decoded
    image would be encoded again on the way, lossily for JPEG); the `images` column decodes them on access.
    """
    if isinstance(dataset, IterableDataset) and dataset.features is None:
        dataset = dataset._resolve_features()  # a stream of unknown features: read them from its first rows
    dataset = undecoded(dataset)
    features = dataset.features
    schema = detect_schema(list(features))
    if schema == "openbmb":
        convert, removed = _from_openbmb, ["image", "question"]
    else:
        conversational = all(isinstance(features[key], List) for key in ("prompt", "chosen", "rejected"))
        if "images" in features and conversational:
            return decoded(dataset)
        convert, removed = _from_trl, [column for column in ("image",) if column in features]
    output = Features({name: feature for name, feature in features.items() if name not in removed})
    output.update({"prompt": MESSAGES, "images": List(ImageFeature(decode=False)), "chosen": MESSAGES})
    output["rejected"] = MESSAGES
    if schema == "openbmb":
        output["prompt_id"] = Value("string")
    return decoded(dataset.map(convert, remove_columns=removed, features=output))


def load_preference_dataset(
    name_or_path: str,
    split: str = "train",
    name: str | None = None,
    streaming: bool = False,
    revision: str | None = None,
    validation: RowValidation | None = None,
    strict: bool = False,
    return_report: bool = False,
    **load_kwargs: Any,
) -> Dataset | IterableDataset | tuple[Dataset | IterableDataset, ValidationReport]:
    """Load a published vision preference dataset in the project's format, its unusable rows left out.

    Every row is checked (`rlaifv_trl.validation.check_preference_row`): its images readable (and, given by path,
    inside the dataset's folder or `validation.image_root`), its prompt and answers well formed, its answers
    different. A bad row is skipped and counted in the report (for a stream, as it is read). Images keep their
    original bytes: decoded pixels are the source's, for map-style and streamed datasets alike. A rankings config
    (`name="iteration-<k>-rankings"`, recognised by its columns) is read as `load_ranking_dataset` reads it.

    Args:
        name_or_path: Hub dataset id (e.g. "openbmb/RLAIF-V-Dataset", "trl-lib/rlaif-v", a run's dataset repo) or a
            local folder.
        split: Split to load.
        name: Config to load (a run's "iteration-<k>", or "iteration-<k>-rankings").
        streaming: Return an `IterableDataset` that reads as it goes.
        revision: Git revision of a Hub dataset.
        validation: What rows may contain (`RowValidation`); by default, images given by path are read only from the
            dataset's own folder.
        strict: Raise `BadRowError`, naming the row, on the first bad row instead of skipping it.
        return_report: Also return the `ValidationReport`.
        **load_kwargs: Passed to `datasets.load_dataset`.
    """
    dataset, local = _load(name_or_path, split, name, streaming, revision, **load_kwargs)
    if is_ranking_schema(list(dataset.features)):
        return _validated_rankings(dataset, name_or_path, local, validation, strict, return_report, streaming)
    dataset = to_preference_format(dataset)
    validation = (validation or RowValidation()).rooted_at(name_or_path if local else None)
    report = ValidationReport(f"load_preference_dataset({public_name(name_or_path)!r})")
    dataset = validate_dataset(
        dataset, lambda row: check_preference_row(row, validation), report, strict, _row_id, images=validation
    )
    if not streaming:
        report.log()
    return (dataset, report) if return_report else dataset


def load_ranking_dataset(
    name_or_path: str,
    split: str = "train",
    name: str | None = None,
    streaming: bool = False,
    revision: str | None = None,
    validation: RowValidation | None = None,
    strict: bool = False,
    return_report: bool = False,
    **load_kwargs: Any,
) -> Dataset | IterableDataset | tuple[Dataset | IterableDataset, ValidationReport]:
    """Load a run's rankings config (e.g. `name="iteration-1-rankings"`), its unusable rows left out.

    Every row is checked (`rlaifv_trl.validation.check_ranking_row`): images readable, prompt well formed,
    candidates text, `ranking` tie groups covering every candidate id once and `ranks` agreeing with them. A bad row
    is skipped and counted in the report (`strict`: raises instead). Images are decoded on access, from their
    original bytes. The arguments are those of `load_preference_dataset`.
    """
    dataset, local = _load(name_or_path, split, name, streaming, revision, **load_kwargs)
    if not is_ranking_schema(list(dataset.features)):
        raise ValueError(
            f"Not a rankings dataset: columns {sorted(dataset.features)}, expected at least {list(RANKING_COLUMNS)}"
        )
    return _validated_rankings(dataset, name_or_path, local, validation, strict, return_report, streaming)


def _load(
    name_or_path: str, split: str, name: str | None, streaming: bool, revision: str | None, **load_kwargs: Any
) -> tuple[Dataset | IterableDataset, bool]:
    """The raw dataset (its features known, also for a stream) and whether it is a local folder."""
    local = Path(name_or_path).is_dir()
    local_files = sorted(Path(name_or_path, name).glob(f"{split}-*.parquet")) if name and local else []
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
    if isinstance(dataset, IterableDataset) and dataset.features is None:
        dataset = dataset._resolve_features()  # a stream of unknown features: read them from its first rows
    return dataset, local


def _validated_rankings(
    dataset: Dataset | IterableDataset,
    name_or_path: str,
    local: bool,
    validation: RowValidation | None,
    strict: bool,
    return_report: bool,
    streaming: bool,
) -> Dataset | IterableDataset | tuple[Dataset | IterableDataset, ValidationReport]:
    validation = (validation or RowValidation()).rooted_at(name_or_path if local else None)
    report = ValidationReport(f"load_ranking_dataset({public_name(name_or_path)!r})")
    dataset = validate_dataset(
        undecoded(dataset), lambda row: check_ranking_row(row, validation), report, strict, _row_id, images=validation
    )
    dataset = decoded(dataset)
    if not streaming:
        report.log()
    return (dataset, report) if return_report else dataset


def _row_id(row: dict[str, Any], index: int) -> Any:
    return row.get("prompt_id") if row.get("prompt_id") is not None else row.get("idx")
