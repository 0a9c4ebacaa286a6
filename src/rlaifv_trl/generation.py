"""Batched text generation with a vision-language model and its processor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from transformers import PreTrainedModel, ProcessorMixin


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
) -> dict[str, torch.Tensor]:
    """Tokenize texts (left padded) with their images, as model inputs on `device`."""
    # One list of images per text, as TRL's collators pass them: processors that nest images by sample (SmolVLM,
    # Gemma 3) would otherwise give every image to the first text.
    nested = [list(row) for row in images] if images is not None else None
    inputs = processor(
        text=list(texts),
        images=nested if nested and any(nested) else None,
        padding=True,
        padding_side="left",
        return_tensors="pt",
        add_special_tokens=False,
    )
    return inputs.to(device)


@torch.no_grad()
def generate_batch(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    prompts: Sequence[list[dict[str, Any]]],
    images: Sequence[Sequence[Image.Image]] | None,
    num_return_sequences: int = 1,
    **generation_kwargs: Any,
) -> list[str]:
    """Generate answers for a batch of conversational prompts in one `generate` call.

    Returns `len(prompts) * num_return_sequences` decoded answers, the `num_return_sequences` answers of each prompt
    next to each other, with special tokens removed and surrounding whitespace stripped.
    """
    inputs = encode(processor, render_prompts(processor, prompts), images, model.device)
    output = model.generate(**inputs, num_return_sequences=num_return_sequences, **generation_kwargs)
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]
