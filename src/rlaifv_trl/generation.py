"""Batched text generation with a vision-language model and its processor, and a progress bar of the prompts
answered."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import PreTrainedModel, ProcessorMixin

from .video import Video, processor_inputs


_PROMPTS_BAR: ContextVar[tqdm | None] = ContextVar("rlaifv_trl_prompts_bar", default=None)


@contextmanager
def prompts_progress(description: str, total: int, *, disable: bool = False) -> Iterator[None]:
    """A progress bar of the prompts answered inside the block: `generate_batch` counts its prompts in it (code that
    generates otherwise calls `prompts_answered`). Inside another such block, the outer bar counts them instead."""
    if _PROMPTS_BAR.get() is not None:
        yield
        return
    with tqdm(total=total, desc=description, unit="prompt", disable=disable) as bar:
        token = _PROMPTS_BAR.set(bar)
        try:
            yield
        finally:
            _PROMPTS_BAR.reset(token)


def prompts_answered(count: int) -> None:
    """Count `count` more prompts answered on the open `prompts_progress` bar (nothing outside one)."""
    bar = _PROMPTS_BAR.get()
    if bar is not None:
        bar.update(count)


def render_prompts(processor: ProcessorMixin, prompts: Sequence[list[dict[str, Any]]]) -> list[str]:
    """Conversational prompts rendered with the processor's chat template, ending with the assistant header."""
    return [
        processor.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False) for prompt in prompts
    ]


def encode(
    processor: ProcessorMixin,
    texts: Sequence[str],
    images: Sequence[Sequence[Image.Image]] | None,
    device: torch.device,
    videos: Sequence[Sequence[Video]] | None = None,
) -> dict[str, torch.Tensor]:
    """Tokenize texts (left padded) with their images and videos (one list of each per text), as model inputs on
    `device`. A processor without a video processor refuses videos, naming its family."""
    # One list of images per text, as TRL's collators pass them: processors that nest images by sample (SmolVLM,
    # Gemma 3) would otherwise give every image to the first text.
    inputs = processor_inputs(
        processor, texts, images, videos, padding=True, padding_side="left", return_tensors="pt",
        add_special_tokens=False,
    )  # fmt: skip
    return inputs.to(device)


def encode_prompts(
    processor: ProcessorMixin,
    prompts: Sequence[list[dict[str, Any]]],
    images: Sequence[Sequence[Image.Image]] | None,
    device: torch.device,
    videos: Sequence[Sequence[Video]] | None = None,
) -> dict[str, torch.Tensor]:
    """Conversational prompts (with `{"type": "image"}` / `{"type": "video"}` placeholders) rendered with the chat
    template and encoded with their images and videos, ready for `generate` or a forward pass."""
    return encode(processor, render_prompts(processor, prompts), images, device, videos)


@torch.no_grad()
def generate_batch(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    prompts: Sequence[list[dict[str, Any]]],
    images: Sequence[Sequence[Image.Image]] | None,
    num_return_sequences: int = 1,
    videos: Sequence[Sequence[Video]] | None = None,
    **generation_kwargs: Any,
) -> list[str]:
    """Generate answers for a batch of conversational prompts (with their images and videos) in one `generate` call.

    Returns `len(prompts) * num_return_sequences` decoded answers, the `num_return_sequences` answers of each prompt
    next to each other, with special tokens removed and surrounding whitespace stripped.
    """
    inputs = encode_prompts(processor, prompts, images, model.device, videos)
    output = model.generate(**inputs, num_return_sequences=num_return_sequences, **generation_kwargs)
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    prompts_answered(len(prompts))
    return [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]
