"""Reading a row's images safely: bytes as they are, paths only inside the dataset's folder, URLs only when allowed,
and no decompression bombs.

An image value is what `datasets` stores (`{"bytes": ..., "path": ...}`, undecoded), a PIL image, raw bytes or a
path. Bytes win over a path. A path is read only when it resolves, symlinks followed, inside `image_root` (the
dataset's folder, or the one configured) and names a regular file: absolute paths elsewhere, `..` escapes, symlinks
out of the folder, FIFOs and devices are refused before anything is opened. URLs are refused unless
`allow_image_urls`. Decoded images are converted to RGB (transparency over white).
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from .problems import BadRow


URL_SCHEMES = ("http://", "https://", "ftp://", "file://", "hf://", "s3://", "gs://", "data:")


@dataclass
class RowValidation:
    r"""
    What the rows of a dataset may contain, for every entry point that reads rows (the recipe's prompts, the feedback
    generator, `load_preference_dataset`, `RLAIFVDPOTrainer`, `rlaifv-trl evaluate`).

    Parameters:
        image_root (`str` or `None`, *optional*, defaults to `None`):
            Folder that images given by path may be read from (they must resolve inside it). `None`: the dataset's own
            folder when it was loaded from one, else no path is read.
        allow_image_urls (`bool`, *optional*, defaults to `False`):
            Fetch images given as http(s) URLs (off: such rows are skipped).
        max_image_pixels (`int`, *optional*, defaults to `64000000`):
            Largest image, in pixels (width x height), read from its header before decoding; larger ones are skipped.
            Images that PIL refuses to open (more than twice `PIL.Image.MAX_IMAGE_PIXELS`, about 179M pixels) are
            too large as well: raise PIL's limit too to read larger ones.
        max_prompt_tokens (`int` or `None`, *optional*, defaults to `1024`):
            Longest prompt text, in tokens of the model's tokenizer (image tokens not counted), sampled by the
            feedback generator. `None`: no limit.
        strict (`bool`, *optional*, defaults to `False`):
            Raise `BadRowError`, naming the row and the problem, on the first bad row instead of skipping it and
            counting it in the report. The recipe sets it from `FeedbackConfig.strict_rows`, its flag, for every
            dataset it reads.
    """

    # Which fields decide results (see `rlaifv_trl.manifest`): all of them but `strict`, which raises on a bad row
    # instead of skipping it.
    result_fields: ClassVar[frozenset[str]] = frozenset(
        {"image_root", "allow_image_urls", "max_image_pixels", "max_prompt_tokens"}
    )
    fields_not_affecting_results: ClassVar[frozenset[str]] = frozenset({"strict"})

    image_root: str | None = field(default=None, metadata={"help": "Folder images given by path may be read from."})
    allow_image_urls: bool = field(default=False, metadata={"help": "Fetch images given as http(s) URLs."})
    max_image_pixels: int = field(default=64_000_000, metadata={"help": "Largest image, in pixels."})
    max_prompt_tokens: int | None = field(
        default=1024, metadata={"help": "Longest prompt text sampled by the feedback generator, in tokens."}
    )
    strict: bool = field(
        default=False,
        metadata={"help": "Raise on the first bad row instead of skipping it (in the recipe: set strict_rows)."},
    )

    def __post_init__(self) -> None:
        if self.max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be at least 1, got {self.max_image_pixels}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be at least 1 or None, got {self.max_prompt_tokens}")

    def rooted_at(self, folder: str | os.PathLike | None) -> RowValidation:
        """These settings, with `folder` as the image root unless one is configured."""
        if self.image_root or folder is None:
            return self
        return replace(self, image_root=str(folder))


def decode_image(value: Any, validation: RowValidation | None = None, field: str = "images") -> Image.Image:
    """An RGB image from an image value; `BadRow` (with a code) when it cannot or may not be read."""
    validation = validation or RowValidation()
    image = open_image(value, validation, field)
    try:
        image.load()
    except Exception as error:  # PIL raises many types for broken files
        raise BadRow("image.unreadable", f"cannot decode the image ({type(error).__name__})", field) from None
    return to_rgb(image)


def open_image(value: Any, validation: RowValidation, field: str = "images") -> Image.Image:
    """The image opened lazily (header read, pixels not decoded), after every check that needs no decoding."""
    if value is None:
        raise BadRow("image.missing", "missing image", field)
    if isinstance(value, Image.Image):
        image = value
    else:
        image = _open_bytes(image_bytes(value, validation, field), validation, field)
    width, height = image.size
    if width == 0 or height == 0:
        raise BadRow("image.empty", "empty image (0 pixels)", field)
    if width * height > validation.max_image_pixels:
        raise BadRow(
            "image.too_large",
            f"{width}x{height} pixels, more than max_image_pixels={validation.max_image_pixels}",
            field,
        )
    return image


def _open_bytes(data: bytes, validation: RowValidation, field: str) -> Image.Image:
    """`PIL.Image.open` of encoded bytes. PIL's decompression-bomb check, which refuses an image from its header, is a
    size limit too: its refusal is `image.too_large`, like `max_image_pixels`'s."""
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # more than twice PIL.Image.MAX_IMAGE_PIXELS
        raise _beyond_pil_limit(2 * Image.MAX_IMAGE_PIXELS, validation, field) from None
    except Image.DecompressionBombWarning:  # more than PIL.Image.MAX_IMAGE_PIXELS, with warnings raised as errors
        raise _beyond_pil_limit(Image.MAX_IMAGE_PIXELS, validation, field) from None
    except Exception as error:
        raise BadRow("image.unreadable", f"not an image ({type(error).__name__})", field) from None


def _beyond_pil_limit(pixels: int, validation: RowValidation, field: str) -> BadRow:
    """The problem of an image of more than `pixels` pixels, which PIL refuses to open."""
    if pixels >= validation.max_image_pixels:
        message = f"more than {pixels} pixels, more than max_image_pixels={validation.max_image_pixels}"
    else:
        message = f"more than {pixels} pixels, PIL's limit (PIL.Image.MAX_IMAGE_PIXELS) below max_image_pixels"
    return BadRow("image.too_large", message, field)


def stored_image(value: Any, validation: RowValidation, field: str = "images") -> dict[str, Any]:
    """An image value as a dataset stores it for publishing: its original encoded bytes, no file name or path."""
    if isinstance(value, Image.Image):
        from datasets import Image as ImageFeature

        return {"bytes": ImageFeature().encode_example(value)["bytes"], "path": None}
    return {"bytes": image_bytes(value, validation, field), "path": None}


def image_bytes(value: Any, validation: RowValidation, field: str = "images") -> bytes:
    """The encoded bytes of an image value, read from wherever it may be read from; `image.empty` for zero bytes,
    wherever they come from (the value, a file, a URL)."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        if not value.get("path"):
            raise BadRow("image.empty", "empty image (no bytes, no path)", field)
        data = _read_path(str(value["path"]), validation, field)
    elif isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, (str, os.PathLike)):
        data = _read_path(str(value), validation, field)
    else:
        raise BadRow("image.unsupported", f"an image value of type {type(value).__name__}", field)
    if not data:
        raise BadRow("image.empty", "empty image (zero bytes)", field)
    return data


def _read_path(path: str, validation: RowValidation, field: str) -> bytes:
    if path.lower().startswith(URL_SCHEMES) or "://" in path:
        return _fetch(path, validation, field)
    if validation.image_root is None:
        raise BadRow("image.path_without_root", "an image given by path, and no image_root to read it from", field)
    root = Path(validation.image_root).resolve()
    candidate = Path(path) if os.path.isabs(path) else root / path
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        raise BadRow("image.path_missing", f"no such image file {Path(path).name!r}", field) from None
    if not resolved.is_relative_to(root):
        raise BadRow("image.path_outside_root", "an image path outside the dataset's image root", field)
    mode = os.stat(resolved).st_mode
    if not stat.S_ISREG(mode):
        raise BadRow("image.path_not_a_file", "an image path that is not a regular file", field)
    with open(resolved, "rb") as stream:
        return stream.read()


def _fetch(url: str, validation: RowValidation, field: str) -> bytes:
    if not validation.allow_image_urls or not url.lower().startswith(("http://", "https://")):
        raise BadRow("image.url_refused", "an image URL (set allow_image_urls to fetch http(s) images)", field)
    from huggingface_hub import get_session

    try:
        response = get_session().get(url, timeout=30, follow_redirects=True)
        response.raise_for_status()
    except Exception as error:
        raise BadRow("image.url_failed", f"fetching the image URL failed ({type(error).__name__})", field) from None
    return response.content


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
