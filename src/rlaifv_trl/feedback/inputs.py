"""The columns of a prompt dataset, read as stored.

The prompt dataset needs a `prompt` column (conversational, TRL's vision format, or a plain string) and an `images`
(list of images) or `image` column, or a `videos` column (a list of videos per row, each a list of frames); `prompt_id` is optional (the row index is used without it). Rows are read with
their images undecoded and checked by `rlaifv_trl.validation`, so that a corrupt, missing or refused image is a
skipped row, not a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datasets import Dataset, List, Value

from ..validation import message_text


PROMPT_COLUMN = "prompt"
IMAGE_COLUMNS = ("images", "image")
VIDEO_COLUMN = "videos"
ID_COLUMN = "prompt_id"
MESSAGE_FEATURE = {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}


def image_column(dataset: Dataset) -> str:
    """The name of the image column, or a clear error when there is none (the whole dataset is unusable)."""
    if PROMPT_COLUMN not in dataset.column_names:
        raise ValueError(f"The prompt dataset has no {PROMPT_COLUMN!r} column (columns: {dataset.column_names})")
    for name in IMAGE_COLUMNS:
        if name in dataset.column_names:
            return name
    raise ValueError(f"The prompt dataset has no 'images' (or 'image') column (columns: {dataset.column_names})")


def visual_columns(dataset: Dataset) -> tuple[str | None, str | None]:
    """The image column (or None) and the video column (`videos`, or None) of a prompt dataset; a clear error when
    it has neither (or no prompt column). With a `videos` column, rows may hold images, videos or both."""
    if VIDEO_COLUMN not in dataset.column_names:
        return image_column(dataset), None
    if PROMPT_COLUMN not in dataset.column_names:
        raise ValueError(f"The prompt dataset has no {PROMPT_COLUMN!r} column (columns: {dataset.column_names})")
    images = next((name for name in IMAGE_COLUMNS if name in dataset.column_names), None)
    return images, VIDEO_COLUMN


def prompt_feature(dataset: Dataset) -> Any:
    """The feature of the output `prompt` column: the input's when conversational, else the standard one."""
    feature = dataset.features.get(PROMPT_COLUMN)
    return feature if isinstance(feature, List) else List(MESSAGE_FEATURE)


def raw_rows(dataset: Dataset, start: int, stop: int) -> list[dict[str, Any]]:
    """Rows `start:stop` as plain Python objects, images left undecoded (`{"bytes": ..., "path": ...}`)."""
    return dataset.with_format("arrow")[start:stop].to_pylist()


def instruction_text(prompt: list[dict[str, Any]]) -> str:
    """The text of the prompt's last user turn (the instruction the answers reply to)."""
    return message_text(prompt[-1]["content"]).strip()


def prompt_ids(dataset: Dataset) -> list[str | None]:
    """The prompt id of every row: the `prompt_id` column as strings, or `row-<index>` without that column."""
    if ID_COLUMN not in dataset.column_names:
        return [f"row-{index}" for index in range(len(dataset))]
    return [None if value is None or str(value) == "" else str(value) for value in dataset[ID_COLUMN]]


@dataclass
class FeedbackInputs:
    """A prompt dataset as the feedback stages read it, with the run's seed.

    Attributes:
        dataset: The prompt dataset.
        column: Its image column (`images` or `image`), or None.
        video_column: Its video column (`videos`), or None.
        ids: The prompt id of every row (`prompt_ids`).
        duplicates: The rows whose prompt id an earlier row has, mapped to that row.
        seed: The run's seed, from which every prompt's seeds derive.
        iteration: The iteration of the RLAIF-V loop (from 1), recorded in the output.
        strict: Raise on the first unusable row instead of skipping it.
    """

    dataset: Dataset
    column: str | None
    video_column: str | None
    ids: list[str | None]
    duplicates: dict[int, int]
    seed: int = 42
    iteration: int = 1
    strict: bool = False

    @classmethod
    def of(cls, dataset: Dataset, seed: int = 42, iteration: int = 1, strict: bool = False) -> FeedbackInputs:
        """The inputs of `dataset`; a clear error when its columns cannot hold prompts."""
        if iteration < 1:
            raise ValueError(f"Iterations are numbered from 1, got {iteration}")
        column, video_column = visual_columns(dataset)
        ids = prompt_ids(dataset)
        return cls(dataset, column, video_column, ids, repeated_ids(ids), seed, iteration, strict)

    def rows(self, start: int, stop: int) -> list[dict[str, Any]]:
        """Rows `start:stop` as stored (`raw_rows`)."""
        return raw_rows(self.dataset, start, stop)


def repeated_ids(ids: list[str | None]) -> dict[int, int]:
    """Rows whose prompt id an earlier row already has, mapped to that earlier row."""
    first: dict[str, int] = {}
    duplicates = {}
    for index, prompt_id in enumerate(ids):
        if prompt_id is None:
            continue
        if prompt_id in first:
            duplicates[index] = first[prompt_id]
        else:
            first[prompt_id] = index
    return duplicates
