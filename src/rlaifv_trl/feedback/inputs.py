"""Reading and checking input rows: one bad row is skipped with a reason, never a crash.

The prompt dataset needs a `prompt` column (conversational, TRL's vision format, or a plain string) and an `images`
(list of images) or `image` column; `prompt_id` is optional (the row index is used without it). Images are decoded
here rather than by `datasets`, so that a corrupt or empty file is a skipped row; grayscale, palette, RGBA, CMYK and
other modes are converted to RGB (transparent pixels become white).
"""

from __future__ import annotations

import io
from typing import Any

from datasets import Dataset, List, Value
from PIL import Image


PROMPT_COLUMN = "prompt"
IMAGE_COLUMNS = ("images", "image")
ID_COLUMN = "prompt_id"
MESSAGE_FEATURE = {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}


class BadRow(ValueError):
    """A row that cannot be used; the message is the reason recorded in the run report."""


def image_column(dataset: Dataset) -> str:
    """The name of the image column, or a clear error when there is none (the whole dataset is unusable)."""
    if PROMPT_COLUMN not in dataset.column_names:
        raise ValueError(f"The prompt dataset has no {PROMPT_COLUMN!r} column (columns: {dataset.column_names})")
    for name in IMAGE_COLUMNS:
        if name in dataset.column_names:
            return name
    raise ValueError(f"The prompt dataset has no 'images' (or 'image') column (columns: {dataset.column_names})")


def prompt_feature(dataset: Dataset) -> Any:
    """The feature of the output `prompt` column: the input's when conversational, else the standard one."""
    feature = dataset.features.get(PROMPT_COLUMN)
    return feature if isinstance(feature, List) else List(MESSAGE_FEATURE)


def raw_rows(dataset: Dataset, start: int, stop: int) -> list[dict[str, Any]]:
    """Rows `start:stop` as plain Python objects, images left undecoded (`{"bytes": ..., "path": ...}`)."""
    return dataset.with_format("arrow")[start:stop].to_pylist()


def decode_image(value: Any) -> Image.Image:
    """An RGB image from a PIL image, `{"bytes", "path"}` dict, bytes or path; `BadRow` if it cannot be read."""
    if value is None:
        raise BadRow("missing image")
    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, dict) and value.get("bytes"):
            image = Image.open(io.BytesIO(value["bytes"]))
        elif isinstance(value, dict) and value.get("path"):
            image = Image.open(value["path"])
        elif isinstance(value, dict):
            raise BadRow("empty image (zero bytes)")
        elif isinstance(value, (bytes, bytearray)):
            if not value:
                raise BadRow("empty image (zero bytes)")
            image = Image.open(io.BytesIO(value))
        elif isinstance(value, str):
            image = Image.open(value)
        else:
            raise BadRow(f"unsupported image value of type {type(value).__name__}")
        image.load()
        if image.width == 0 or image.height == 0:
            raise BadRow("empty image (0 pixels)")
        return to_rgb(image)
    except BadRow:
        raise
    except Exception as error:  # PIL raises many types for broken files
        raise BadRow(f"unreadable image: {type(error).__name__}: {error}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """The image in RGB; transparency is composited over white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode.startswith("I;16"):
        image = image.point(lambda value: value / 256).convert("L")
    return image.convert("RGB")


def row_images(value: Any, column: str) -> list[Image.Image]:
    """The decoded images of a row's image column (a list of images, or one image)."""
    values = value if isinstance(value, list) else [value]
    if not values or (column == "images" and value is None):
        raise BadRow("no image")
    return [decode_image(item) for item in values]


def _count_images(content: Any) -> int:
    if isinstance(content, list):
        return sum(isinstance(item, dict) and item.get("type") == "image" for item in content)
    return 0


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [item.get("text") or "" for item in content if isinstance(item, dict) and item.get("type") == "text"]
        return " ".join(part for part in parts if part)
    return ""


def conversational_prompt(prompt: Any, num_images: int) -> list[dict[str, Any]]:
    """The prompt as a conversation ending with a user turn whose image placeholders match the images.

    A plain string becomes one user turn with the images first. Raises `BadRow` when the prompt is empty or malformed.
    """
    if isinstance(prompt, str):
        if not prompt.strip():
            raise BadRow("empty prompt")
        images = [{"type": "image", "text": None} for _ in range(num_images)]
        return [{"role": "user", "content": [*images, {"type": "text", "text": prompt}]}]
    if not isinstance(prompt, list) or not prompt:
        raise BadRow("empty prompt" if prompt in (None, []) else f"prompt of type {type(prompt).__name__}")
    if not all(isinstance(message, dict) and "role" in message and "content" in message for message in prompt):
        raise BadRow("malformed prompt: every message needs a role and a content")
    if prompt[-1]["role"] != "user":
        raise BadRow(f"malformed prompt: the last message is from {prompt[-1]['role']!r}, not the user")
    if not _text(prompt[-1]["content"]).strip():
        raise BadRow("empty prompt")
    placeholders = sum(_count_images(message["content"]) for message in prompt)
    if placeholders != num_images:
        raise BadRow(f"the prompt has {placeholders} image placeholder(s) but the row has {num_images} image(s)")
    return prompt


def instruction_text(prompt: list[dict[str, Any]]) -> str:
    """The text of the prompt's last user turn (the instruction the answers reply to)."""
    return _text(prompt[-1]["content"]).strip()


def prompt_ids(dataset: Dataset) -> list[str | None]:
    """The prompt id of every row: the `prompt_id` column as strings, or `row-<index>` without that column."""
    if ID_COLUMN not in dataset.column_names:
        return [f"row-{index}" for index in range(len(dataset))]
    return [None if value is None or str(value) == "" else str(value) for value in dataset[ID_COLUMN]]
