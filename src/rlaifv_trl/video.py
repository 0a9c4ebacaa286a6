"""Video prompts: a video is a list of frames (PIL images), one `{"type": "video"}` placeholder per video.

Datasets carry videos in a `videos` column, one list of videos per row (like `images` holds a list of images), stored
as `datasets.List(datasets.List(datasets.Image()))`: each video a list of frames. Processors take them as
`processor(text=..., videos=[frames, ...])`; only families whose processor has a video processor (Qwen2-VL,
Qwen2.5-VL, Qwen3-VL, ...) accept them, the others refuse a video prompt naming the family.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from transformers import ProcessorMixin

from .validation import RowValidation, row_images, row_videos


VIDEO_COLUMN = "videos"
Video = list[Image.Image]


def supports_video(processor: ProcessorMixin) -> bool:
    """Whether `processor` takes videos (it has a video processor)."""
    return getattr(processor, "video_processor", None) is not None


def processor_family(processor: ProcessorMixin) -> str:
    """A readable name of the processor's model family (its class name without "Processor")."""
    return type(processor).__name__.removesuffix("Processor") or type(processor).__name__


def require_video_support(processor: ProcessorMixin, role: str = "model") -> None:
    """Raise a `ValueError` naming the family when the processor takes no videos."""
    if not supports_video(processor):
        raise ValueError(
            f"The {role}'s processor ({type(processor).__name__}, family {processor_family(processor)}) has no video "
            "processor: video prompts need a family that takes videos, e.g. Qwen2-VL, Qwen2.5-VL or Qwen3-VL."
        )


def prompt_visuals(
    row: dict[str, Any], validation: RowValidation | None = None
) -> tuple[list[Image.Image], list[Video]]:
    """A row's decoded images (from `images` or `image`) and videos (from `videos`), each possibly empty.

    Values may be PIL images or stored values (`{"bytes", "path"}`); a bad frame or image raises `BadRow`.
    """
    images: list[Image.Image] = []
    for column in ("images", "image"):
        if row.get(column):
            images = row_images(row[column], column, validation)
            break
    videos = row_videos(row.get(VIDEO_COLUMN), VIDEO_COLUMN, validation)
    return images, videos


def has_videos(videos: Sequence[Sequence[Video]] | None) -> bool:
    """Whether a batch's per-prompt lists of videos hold any video."""
    return bool(videos) and any(videos)


def processor_inputs(
    processor: ProcessorMixin,
    texts: Sequence[str],
    images: Sequence[Sequence[Image.Image]] | None,
    videos: Sequence[Sequence[Video]] | None = None,
    **kwargs: Any,
) -> dict[str, torch.Tensor]:
    """`processor(text=texts, images=..., videos=...)`: one list of images and one list of videos per text.

    Images go nested by text (as TRL's collators pass them); videos go as a flat list in text order (each a list of
    frames), which is how processors match them to the video placeholders. `videos` is passed only when there are
    some, so processors without a video processor keep working on image prompts and refuse video ones clearly.
    """
    nested = [list(row) for row in images] if images is not None else None
    call: dict[str, Any] = {"text": list(texts), "images": nested if nested and any(nested) else None, **kwargs}
    if has_videos(videos):
        require_video_support(processor)
        call["videos"] = [list(video) for row in videos for video in row]
    return processor(**call)
