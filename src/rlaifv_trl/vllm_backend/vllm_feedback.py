"""The sampler, the language-model splitter's runner and the yes/no labeler on vLLM.

Each takes the same inputs and gives the same kind of output as its transformers counterpart
(`CandidateSampler`, `CausalLMRunner`, `YesNoLabeler`), renders its prompts the same way (the model's chat template,
tokenized without added special tokens) and records the same seeds. Each starts its engine at first use and frees it
on `close()`; the feedback generator closes them at the end of every stage, so one model at a time holds memory.

The labeler asks vLLM for the log-probabilities of its yes/no token ids only (`SamplingParams.logprob_token_ids`):
the model runner gathers them from the full-vocabulary log-softmax of the first generated token (vLLM's
`raw_logprobs`), so they equal those of the whole vocabulary while vLLM's front end builds a handful of log-prob
objects per question instead of one per vocabulary token (0.8 CPU-ms instead of 0.5 CPU-s per question with a 64k
vocabulary, `benchmarks/vllm_labeler.py`). A top-k list may miss the tokens (or needs k large enough to be as slow),
`allowed_token_ids` renormalises over the yes/no tokens and loses the rest of the mass, and prompt log-probs of the two
continuations cost a second prefill of every question.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image
from transformers import GenerationConfig, PreTrainedTokenizerBase, ProcessorMixin

from ..feedback.labeler import LabelGroup, YesNoLabel, render_question, single_token_ids
from ..feedback.llm_claims import render_instruction
from ..feedback.sampling import derive_seed, nucleus_and_top_k
from ..generation import render_prompts
from .vllm_engine import VLLMEngine


logger = logging.getLogger(__name__)

# `generate` keyword arguments of the transformers sampler that vLLM's `SamplingParams` take under the same name.
SAMPLING_KWARGS = {"repetition_penalty", "presence_penalty", "frequency_penalty", "min_p", "min_tokens"}


class LazyEngine:
    """An engine started at first use and stopped by `close()` (started again if used after)."""

    def __init__(self, start: Callable[[], VLLMEngine]):
        self._start = start
        self._engine: VLLMEngine | None = None

    @property
    def engine(self) -> VLLMEngine:
        if self._engine is None:
            self._engine = self._start()
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None


def _stop_token_ids(generation_config: GenerationConfig) -> list[int]:
    eos = generation_config.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos or [])


class VLLMCandidateSampler(LazyEngine):
    """`CandidateSampler` on vLLM: candidate j of a prompt with seed s is one request seeded with
    `derive_seed(s, str(j), "candidate")` (the seed the transformers sampler gives its generator); vLLM's prefix cache
    runs the prompt and its image once for all of them.

    Args:
        start: Starts the policy's engine.
        processor: The policy's processor (chat template).
        generation_config: The policy's generation config: end-of-sequence tokens, and `top_p` / `top_k` when not
            given.
        num_candidates, temperature, max_new_tokens, top_p, top_k: As `CandidateSampler`.
        generation_kwargs: Further sampling options; those vLLM has (`SAMPLING_KWARGS`) are passed on, others
            refused.
    """

    def __init__(
        self,
        start: Callable[[], VLLMEngine],
        processor: ProcessorMixin,
        generation_config: GenerationConfig,
        num_candidates: int = 10,
        temperature: float = 0.7,
        max_new_tokens: int = 512,
        top_p: float | None = None,
        top_k: int | None = None,
        generation_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__(start)
        unknown = sorted(set(generation_kwargs or {}) - SAMPLING_KWARGS)
        if unknown:
            raise ValueError(
                f"generation_kwargs {unknown} have no equivalent in vLLM's sampling parameters (supported: "
                f"{sorted(SAMPLING_KWARGS)}); use sampling_backend='transformers' for them"
            )
        self.processor = processor
        self.num_candidates = num_candidates
        top_p, top_k = nucleus_and_top_k(generation_config, top_p, top_k)
        self.sampling = {
            "n": 1,
            "temperature": temperature,
            "top_p": 1.0 if top_p is None else top_p,
            "top_k": top_k or 0,
            "max_tokens": max_new_tokens,
            "stop_token_ids": _stop_token_ids(generation_config),
            "skip_special_tokens": True,
            **(generation_kwargs or {}),
        }

    def sample(self, prompt: list[dict[str, Any]], images: list[Image.Image], seed: int) -> list[str]:
        return self.sample_batch([prompt], [images], [seed])[0]

    def sample_batch(
        self, prompts: Sequence[list[dict[str, Any]]], images: Sequence[list[Image.Image]], seeds: Sequence[int]
    ) -> list[list[str]]:
        """The candidates of several prompts: one list of `num_candidates` per prompt."""
        texts = render_prompts(self.processor, prompts)
        n = self.num_candidates
        requests = [(text, list(own)) for text, own in zip(texts, images) for _ in range(n)]
        sampling = [
            {**self.sampling, "seed": derive_seed(seed, str(index), "candidate")}
            for seed in seeds
            for index in range(n)
        ]
        outputs = self.engine.generate([r[0] for r in requests], [r[1] for r in requests], sampling)
        answers = [completions[0].strip() for completions in outputs]
        return [answers[i : i + n] for i in range(0, len(answers), n)]


class VLLMCausalLMRunner(LazyEngine):
    """`CausalLMRunner` on vLLM: instruction i of a call with seed s is sampled with seed
    `derive_seed(s, str(i), "completion")`.

    Args:
        start: Starts the language model's engine.
        tokenizer: Its tokenizer (chat template).
        model_id: Name recorded in the provenance columns.
        temperature, top_p, max_new_tokens: As `CausalLMRunner`.
        batch_size: Instructions per engine call (vLLM schedules the requests of a call together).
    """

    def __init__(
        self,
        start: Callable[[], VLLMEngine],
        tokenizer: PreTrainedTokenizerBase,
        model_id: str,
        temperature: float = 0.2,
        top_p: float = 0.9,
        max_new_tokens: int = 256,
        generation_config: GenerationConfig | None = None,
        batch_size: int = 16,
    ):
        super().__init__(start)
        self.batch_size = batch_size
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.sampling = {
            "n": 1,
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_new_tokens,
            "stop_token_ids": _stop_token_ids(generation_config or GenerationConfig()),
            "skip_special_tokens": True,
        }

    def render(self, instruction: str) -> str:
        """As `CausalLMRunner.render`; a plain-text input gets the special tokens the tokenizer would add written out
        (vLLM tokenizes every prompt without adding them)."""
        text = render_instruction(self.tokenizer, instruction)
        if getattr(self.tokenizer, "chat_template", None):
            return text
        ids = self.tokenizer(text)["input_ids"]
        plain = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        head = ids[: len(ids) - len(plain)] if ids[len(ids) - len(plain) :] == plain else []
        return self.tokenizer.decode(head) + text if head else text

    def complete(self, instructions: Sequence[str], seed: int) -> list[str]:
        return self.complete_groups([(instructions, seed)])[0]

    def complete_groups(self, groups: Sequence[tuple[Sequence[str], int]]) -> list[list[str]]:
        """`complete` of several `(instructions, seed)` groups, their requests sent together in engine calls of
        `batch_size`: each request keeps the seed `complete` gives it, so each group gets what `complete` alone
        gives it, while the engine decodes many groups' requests in one batch instead of one group's."""
        texts = [self.render(instruction) for instructions, _ in groups for instruction in instructions]
        sampling = [
            {**self.sampling, "seed": derive_seed(seed, str(i), "completion")}
            for instructions, seed in groups
            for i in range(len(instructions))
        ]
        outputs = []
        for start in range(0, len(texts), self.batch_size):
            stop = start + self.batch_size
            outputs += [
                completions[0] for completions in self.engine.generate(texts[start:stop], None, sampling[start:stop])
            ]
        grouped, start = [], 0
        for instructions, _ in groups:
            grouped.append(outputs[start : start + len(instructions)])
            start += len(instructions)
        return grouped


class VLLMYesNoLabeler(LazyEngine):
    """`YesNoLabeler` on vLLM: p_yes and p_no are the first generated token's probabilities of the yes and no token
    ids (full softmax), read by id; vLLM's prefix cache encodes a group's image once for all its questions.

    Args:
        start: Starts the labeler's engine.
        processor: The labeler's processor (chat template).
        yes_words, no_words: As `YesNoLabeler`.
        batch_size: Questions per engine call.
    """

    def __init__(
        self,
        start: Callable[[], VLLMEngine],
        processor: ProcessorMixin,
        yes_words: Sequence[str] = ("yes", "Yes"),
        no_words: Sequence[str] = ("no", "No"),
        batch_size: int = 64,
    ):
        super().__init__(start)
        self.batch_size = batch_size
        self.processor = processor
        tokenizer = getattr(processor, "tokenizer", processor)
        self.token_ids = [single_token_ids(tokenizer, yes_words), single_token_ids(tokenizer, no_words)]
        self.num_full_forwards = 0  # every question is one request: there is no fallback

    def label_group(self, group: LabelGroup) -> list[YesNoLabel]:
        if not group.questions:
            return []
        unique = list(dict.fromkeys(group.questions))
        texts = [render_question(self.processor, len(group.images), question) for question in unique]
        probabilities = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            probabilities += self.engine.next_token_probabilities(chunk, [group.images] * len(chunk), self.token_ids)
        labels = {question: YesNoLabel(p_yes, p_no) for question, (p_yes, p_no) in zip(unique, probabilities)}
        return [labels[question] for question in group.questions]

    def label(self, groups: Sequence[LabelGroup]) -> list[list[YesNoLabel]]:
        return [self.label_group(group) for group in groups]
