"""Deconfounded candidate sampling: n answers per prompt, same decoding parameters, one batched `generate` call."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from PIL import Image
from transformers import PreTrainedModel, ProcessorMixin

from ..generation import encode, render_prompts


def derive_seed(base_seed: int, prompt_id: str, purpose: str) -> int:
    """A seed in [0, 2**31) from the run's seed, a prompt id and what it is for; independent of order and sharding."""
    digest = hashlib.sha256(f"{base_seed}\x1f{purpose}\x1f{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class CandidateSampler:
    """Samples `num_candidates` answers to one prompt from a vision-language policy.

    The prompt (text and images) is processed once and expanded to `num_candidates` rows inside one `generate` call
    (`num_return_sequences`), with the same decoding parameters for every row, right after seeding torch with the
    prompt's seed: the same seed and model give the same candidates.

    Args:
        model: An `AutoModelForImageTextToText` policy.
        processor: Its processor, with a chat template.
        num_candidates: Answers per prompt.
        temperature: Sampling temperature.
        max_new_tokens: Longest answer, in tokens.
        top_p: Nucleus sampling; `None` keeps the model's generation config.
        top_k: Top-k sampling; `None` keeps the model's generation config.
        generation_kwargs: Further keyword arguments for `generate`.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        processor: ProcessorMixin,
        num_candidates: int = 10,
        temperature: float = 0.7,
        max_new_tokens: int = 512,
        top_p: float | None = None,
        top_k: int | None = None,
        generation_kwargs: dict[str, Any] | None = None,
    ):
        self.model = model
        self.processor = processor
        self.num_candidates = num_candidates
        self.generation: dict[str, Any] = {
            "do_sample": True,
            "temperature": temperature,
            "max_new_tokens": max_new_tokens,
        }
        if top_p is not None:
            self.generation["top_p"] = top_p
        if top_k is not None:
            self.generation["top_k"] = top_k
        tokenizer = getattr(processor, "tokenizer", processor)
        if model.generation_config.pad_token_id is None and tokenizer.pad_token_id is not None:
            self.generation["pad_token_id"] = tokenizer.pad_token_id
        self.generation.update(generation_kwargs or {})

    @torch.no_grad()
    def sample(self, prompt: list[dict[str, Any]], images: list[Image.Image], seed: int) -> list[str]:
        """The candidates for one conversational prompt and its images, in the order generate returns them."""
        inputs = encode(self.processor, render_prompts(self.processor, [prompt]), [images], self.model.device)
        torch.manual_seed(seed)
        output = self.model.generate(**inputs, num_return_sequences=self.num_candidates, **self.generation)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [text.strip() for text in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]
