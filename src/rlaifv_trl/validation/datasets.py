"""A checked pass over a dataset: each row checked once (lazily for a stream), bad rows skipped and reported."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
from datasets import Dataset, Features, IterableDataset, List
from datasets import Image as ImageFeature

from .images import RowValidation, stored_image
from .problems import BadRow
from .report import ValidationReport


ROW_CHUNK = 256


def undecoded(dataset: Dataset | IterableDataset) -> Dataset | IterableDataset:
    """The dataset with its image columns left undecoded (`{"bytes", "path"}`): rows read as stored, not re-encoded."""
    features = dataset.features
    if features is None:
        return dataset
    for name, feature in features.items():
        if _image_decode(feature) is True:
            dataset = dataset.cast_column(name, _set_image_decode(feature, False))
    return dataset


def _image_decode(feature: Any) -> bool | None:
    """Whether an image column (`Image`, `List(Image)` or, for videos, `List(List(Image))`) decodes; None for others."""
    while isinstance(feature, List):
        feature = feature.feature
    return feature.decode if isinstance(feature, ImageFeature) else None


def _set_image_decode(feature: Any, decode: bool) -> Any:
    """An image column's feature, decoding or not."""
    if isinstance(feature, List):
        return List(_set_image_decode(feature.feature, decode))
    return ImageFeature(decode=decode)


def decoded(dataset: Dataset | IterableDataset) -> Dataset | IterableDataset:
    """The dataset with its image columns decoded on access again (from the stored bytes)."""
    if dataset.features is None:
        return dataset
    for name, feature in decoding(dataset.features).items():
        if feature != dataset.features[name]:
            dataset = dataset.cast_column(name, feature)
    return dataset


def decoding(features: Features) -> Features:
    """`features` with every image column decoded on access."""
    output = Features(features)
    for name, feature in features.items():
        if _image_decode(feature) is False:
            output[name] = _set_image_decode(feature, True)
    return output


def validate_dataset(
    dataset: Dataset | IterableDataset,
    check: Callable[[dict[str, Any]], None],
    report: ValidationReport,
    strict: bool = False,
    row_id: Callable[[dict[str, Any], int], Any] | None = None,
    images: RowValidation | None = None,
) -> Dataset | IterableDataset:
    """The rows of `dataset` that `check` accepts (it raises `BadRow` otherwise), each rejection in `report`.

    `check` sees rows as stored (images undecoded). A map-style dataset is checked now and, when rows were skipped,
    the others are selected (no copy of the data); with no bad row the dataset itself is returned. A stream is
    checked lazily as it is read, and `report` fills as it goes. With `strict`, the first bad row raises
    `BadRowError` naming it. With `images`, the kept rows' images given by path get their bytes, read the way the
    check read them: nothing decodes a path later, from wherever it is run.
    """
    row_id = row_id or (lambda row, index: row.get("prompt_id"))

    def accept(row: dict[str, Any], index: int) -> bool:
        try:
            check(row)
        except BadRow as problem:
            report.skip(index, row_id(row, index), problem, strict)
            return False
        report.keep()
        return True

    if isinstance(dataset, IterableDataset):
        # A generator rather than `IterableDataset.filter`, after which `datasets` 5.2 no longer decodes images.
        source = undecoded(dataset)

        def rows():
            for index, row in enumerate(source):
                if accept(row, index):
                    yield embed_image_paths(row, images) if images is not None else row

        return IterableDataset.from_generator(rows, features=decoding(source.features))
    raw = undecoded(dataset).with_format("arrow")
    keep = []
    for start in range(0, len(dataset), ROW_CHUNK):
        for offset, row in enumerate(raw[start : start + ROW_CHUNK].to_pylist()):
            if accept(row, start + offset):
                keep.append(start + offset)
    checked = dataset if len(keep) == len(dataset) else dataset.select(keep)
    if images is not None and has_image_paths(checked):
        checked = decoded(undecoded(checked).map(embed_image_paths, fn_kwargs={"validation": images}))
    return checked


def embed_image_paths(row: dict[str, Any], validation: RowValidation) -> dict[str, Any]:
    """The row with each image given by path only replaced by its bytes (read inside the image root)."""
    for column in ("images", "image"):
        value = row.get(column)
        if isinstance(value, dict) and not value.get("bytes") and value.get("path"):
            row = {**row, column: stored_image(value, validation, column)}
        elif isinstance(value, list) and any(isinstance(v, dict) and not v.get("bytes") for v in value):
            row = {**row, column: [stored_image(v, validation, column) if isinstance(v, dict) else v for v in value]}
    videos = row.get("videos")
    if isinstance(videos, list) and any(_path_only(frame) for video in videos or [] for frame in video or []):
        row = {
            **row,
            "videos": [
                [stored_image(frame, validation, "videos") if _path_only(frame) else frame for frame in video or []]
                for video in videos
            ],
        }
    return row


def _path_only(value: Any) -> bool:
    return isinstance(value, dict) and not value.get("bytes")


def has_image_paths(dataset: Dataset) -> bool:
    """Whether some image of the dataset is stored as a path without bytes."""
    table = dataset.with_format("arrow")[:]
    for name in ("images", "image", "videos"):
        if name not in table.column_names:
            continue
        column = table.column(name).combine_chunks()
        while pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            column = column.flatten()
        if pa.types.is_struct(column.type) and column.field("bytes").null_count > column.null_count:
            return True
    return False
