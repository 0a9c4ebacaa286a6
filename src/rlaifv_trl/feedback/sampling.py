"""Deconfounded candidate sampling: n answers per prompt, same decoding parameters, several prompts per `generate`.

Every candidate is sampled with its own random generator, seeded from its prompt's seed and its index, so the
candidates of a prompt do not depend on which other prompts share its `generate` call (`SeededSampling`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    ProcessorMixin,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from ..generation import encode_prompts
from ..video import Video


def derive_seed(base_seed: int, prompt_id: str, purpose: str) -> int:
    """A seed in [0, 2**31) from the run's seed, a prompt id and what it is for; independent of order and sharding."""
    digest = hashlib.sha256(f"{base_seed}\x1f{purpose}\x1f{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def nucleus_and_top_k(generation_config, top_p: float | None, top_k: int | None) -> tuple[float | None, int | None]:
    """`top_p` and `top_k` as given, or the model's generation config's where `None` (as `generate` reads them)."""
    return (
        top_p if top_p is not None else getattr(generation_config, "top_p", None),
        top_k if top_k is not None else getattr(generation_config, "top_k", None),
    )


class SeededSampling(LogitsProcessor):
    """Samples each row's next token with that row's own random generator, inside `generate`.

    The row's scores are warped (temperature, top-k, top-p), one uniform number is drawn from the row's generator
    and the token where the cumulative probability passes it is kept (inverse-CDF sampling, the same distribution as
    `torch.multinomial`); every other token gets -inf, so whatever `generate` does next can only pick it (run it
    with its own warpers off: temperature 1, top_k 0, top_p 1). A row draws one number per step,
    so its tokens depend on its own generator only, not on how many rows run beside it or for how long (up to the
    float rounding of batched forward passes).

    Args:
        generators: One `torch.Generator` per row of the generate call, in row order.
        temperature: Sampling temperature.
        top_k: Keep the k most likely tokens (`None` or 0: all).
        top_p: Keep the smallest set of tokens whose probability reaches top_p (`None` or 1: all).
    """

    def __init__(
        self, generators: Sequence[torch.Generator], temperature: float, top_k: int | None, top_p: float | None
    ):
        self.generators = list(generators)
        self.warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
        if top_k:
            self.warpers.append(TopKLogitsWarper(top_k))
        if top_p is not None and top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != len(self.generators):
            raise ValueError(f"{scores.shape[0]} rows to sample but {len(self.generators)} generators")
        probabilities = self.warpers(input_ids, scores).float().softmax(-1)
        draws = torch.stack([torch.rand((), generator=generator) for generator in self.generators])
        cumulative = probabilities.cumsum(-1)
        tokens = (cumulative < draws.to(cumulative.device)[:, None] * cumulative[:, -1:]).sum(-1)
        tokens = tokens.clamp(max=scores.shape[-1] - 1)
        forced = torch.full_like(scores, float("-inf"))
        return forced.scatter_(1, tokens[:, None], 0.0)


class CandidateSampler:
    """Samples `num_candidates` answers to each prompt from a vision-language policy.

    Prompts are processed together (left padded) and each is expanded to `num_candidates` rows inside one `generate`
    call, with the same decoding parameters for every row. Candidate j of a prompt with seed s is sampled with a
    generator seeded with `derive_seed(s, j, "candidate")` (`SeededSampling`): the same seed and model give the same
    candidates whether the prompt is sampled alone or with others.

    Args:
        model: An `AutoModelForImageTextToText` policy.
        processor: Its processor, with a chat template.
        num_candidates: Answers per prompt.
        temperature: Sampling temperature.
        max_new_tokens: Longest answer, in tokens.
        top_p: Nucleus sampling; `None` keeps the model's generation config.
        top_k: Top-k sampling; `None` keeps the model's generation config.
        generation_kwargs: Further keyword arguments for `generate` (e.g. `repetition_penalty`).
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
        config = model.generation_config
        self.temperature = temperature
        self.top_p, self.top_k = nucleus_and_top_k(config, top_p, top_k)
        # SeededSampling does the warping and sampling and leaves one finite score per row; generate's own warpers
        # are turned off, so its sampling step can only pick that token.
        self.generation: dict[str, Any] = {
            "do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": None, "typical_p": 1.0,
            "max_new_tokens": max_new_tokens,
        }  # fmt: skip
        tokenizer = getattr(processor, "tokenizer", processor)
        if config.pad_token_id is None and tokenizer.pad_token_id is not None:
            self.generation["pad_token_id"] = tokenizer.pad_token_id
        self.generation.update(generation_kwargs or {})

    def sample(
        self, prompt: list[dict[str, Any]], images: list[Image.Image], seed: int, videos: list[Video] | None = None
    ) -> list[str]:
        """The candidates for one conversational prompt and its images (and videos)."""
        return self.sample_batch([prompt], [images], [seed], [videos or []])[0]

    @torch.no_grad()
    def sample_batch(
        self,
        prompts: Sequence[list[dict[str, Any]]],
        images: Sequence[list[Image.Image]],
        seeds: Sequence[int],
        videos: Sequence[list[Video]] | None = None,
    ) -> list[list[str]]:
        """The candidates of several prompts from one `generate` call: one list of `num_candidates` per prompt.
        `videos` holds one list of videos (each a list of frames) per prompt."""
        inputs = encode_prompts(self.processor, prompts, images, self.model.device, videos)
        generators = [
            torch.Generator().manual_seed(derive_seed(seed, str(index), "candidate"))
            for seed in seeds
            for index in range(self.num_candidates)
        ]
        sampling = SeededSampling(generators, self.temperature, self.top_k, self.top_p)
        output = self.model.generate(
            **inputs,
            num_return_sequences=self.num_candidates,
            logits_processor=LogitsProcessorList([sampling]),
            **self.generation,
        )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        texts = [text.strip() for text in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]
        return [texts[i : i + self.num_candidates] for i in range(0, len(texts), self.num_candidates)]
