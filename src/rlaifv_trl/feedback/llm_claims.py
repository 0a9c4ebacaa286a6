"""Claim splitting and question writing with any Hugging Face causal language model.

The model gets our own instructions (rendered with its chat template when it has one), samples with the reference
settings (temperature 0.2, top_p 0.9, 256 new tokens, answers cut to 300 words), and its output is parsed leniently:
bullets or numbering or none, headings, empty lines, repeats and echoed prompt sections are all handled.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..cards import public_name
from ..loading import ModelLoading, load_causal_lm
from .rules import RuleBasedQuestionWriter, sentences, truncate_words


logger = logging.getLogger(__name__)

SPLIT_INSTRUCTION = (
    "Below are a question about an image and the answer someone gave. Write down every fact the answer states about "
    'the image, one per line, each line starting with "- ". Each fact is one short sentence that can be checked on '
    "its own: name the thing instead of using a pronoun. Leave out opinions, feelings, guesses and anything that is "
    'not about the image. If the answer states no fact, write "- none".\n\n'
    "Question: {question}\n"
    "Answer: {answer}\n\n"
    "Facts:"
)
QUESTION_INSTRUCTION = (
    "Rewrite the statement about an image as one question that can be answered with yes or no, so that the answer is "
    "yes exactly when the statement is true. Keep every detail and every negation. Write only the question.\n\n"
    "Statement: {claim}\n"
    "Question:"
)

_MARKER = re.compile(r"^\s*(?:[-*•·–—+]+|\(?\d{1,3}\s*[.):]|\(?[a-zA-Z][.)])\s*")
_SECTION = re.compile(r"^\s*(?:question|answer|statement|instruction)s?\s*:", re.IGNORECASE)
_NOTHING = {"none", "n/a", "na", "no facts", "no fact", "nothing", "no claims", "no claim", "empty"}
_AUXILIARIES = {"is", "are", "was", "were", "do", "does", "did", "can", "could", "has", "have", "had", "will",
                "would", "should", "may", "might", "must", "shall"}  # fmt: skip


def _clean(line: str) -> str:
    line = line.replace("**", "").replace("__", "").strip()
    return line.strip("\"'“”‘’` ").strip()


def _key(claim: str) -> str:
    return re.sub(r"[\s.!]+$", "", re.sub(r"\s+", " ", claim.lower())).strip()


def parse_claims(text: str) -> list[str]:
    """Claims listed in a language model's output, in order, without repeats.

    Bulleted or numbered lines are the claims when there are any; otherwise every sentence of every line is. Headings
    (`# ...`, lines ending with ":"), "none", questions and anything after an echoed "Question:"/"Answer:" section are
    skipped.
    """
    lines = []
    for raw in text.splitlines():
        if _SECTION.match(raw):
            break
        if not raw.strip():
            continue
        lines.append(raw)
    bulleted = [line for line in lines if _MARKER.match(line) and _MARKER.sub("", line).strip()]
    if bulleted:
        candidates = [_clean(_MARKER.sub("", line)) for line in bulleted]
    else:
        candidates = [s for line in lines for s in sentences(_clean(line))]
    claims, seen = [], set()
    for claim in candidates:
        claim = re.sub(r"\s+", " ", claim).strip()
        if not claim or claim.startswith("#") or claim.endswith(":") or claim.endswith("?"):
            continue
        key = _key(claim)
        if not key or key in _NOTHING or key in seen:
            continue
        seen.add(key)
        claims.append(claim if re.search(r"[.!]$", claim) else f"{claim}.")
    return claims


def parse_question(text: str) -> str | None:
    """The polar question in a language model's output, or None when there is none."""
    for raw in text.splitlines():
        line = _clean(_MARKER.sub("", raw))
        line = re.sub(r"^(?:question|q)\s*:\s*", "", line, flags=re.IGNORECASE).strip()
        if not line or line.endswith(":"):
            continue
        if "?" in line:
            return line[: line.index("?") + 1].strip()
        first = line.split()[0].lower()
        return line.rstrip(".!") + "?" if first in _AUXILIARIES else None
    return None


def render_instruction(tokenizer: PreTrainedTokenizerBase, instruction: str) -> str:
    """A language model's input for one instruction: its chat template when it has one, else the plain text (whose
    special tokens, such as a BOS, the tokenizer adds)."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": instruction}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return instruction + "\n"


class CausalLMRunner:
    """Prompts a causal language model with instructions and samples completions in batches.

    Args:
        model: A `PreTrainedModel` or the name/path of one (loaded with `AutoModelForCausalLM`).
        tokenizer: Its tokenizer; loaded from the model's name/path when omitted.
        temperature: Sampling temperature.
        top_p: Nucleus sampling.
        max_new_tokens: Longest completion, in tokens.
        batch_size: Instructions per `generate` call.
        loading: How a model given by name is loaded (revision, dtype, quantization, ...).
    """

    def __init__(
        self,
        model: PreTrainedModel | str,
        tokenizer: PreTrainedTokenizerBase | None = None,
        temperature: float = 0.2,
        top_p: float = 0.9,
        max_new_tokens: int = 256,
        batch_size: int = 16,
        loading: ModelLoading | None = None,
    ):
        if isinstance(model, (str, os.PathLike)):
            model, loaded_tokenizer = load_causal_lm(model, loading)
            tokenizer = tokenizer or loaded_tokenizer
        if tokenizer is None:
            raise ValueError("Pass the tokenizer of a language model given as an object")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_id = getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.generation = {
            "do_sample": True,
            "temperature": temperature,
            "top_p": top_p,
            "max_new_tokens": max_new_tokens,
        }
        self.batch_size = batch_size

    def render(self, instruction: str) -> str:
        """The model input for one instruction: its chat template when it has one, else the plain text."""
        return render_instruction(self.tokenizer, instruction)

    @torch.no_grad()
    def complete(self, instructions: Sequence[str], seed: int) -> list[str]:
        """One sampled completion per instruction; the same seed gives the same completions."""
        if not instructions:
            return []
        torch.manual_seed(seed)
        chat = bool(getattr(self.tokenizer, "chat_template", None))
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id
        outputs: list[str] = []
        for start in range(0, len(instructions), self.batch_size):
            texts = [self.render(text) for text in instructions[start : start + self.batch_size]]
            if self.tokenizer.pad_token_id is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            inputs = self.tokenizer(
                texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=not chat
            ).to(self.model.device)
            generated = self.model.generate(**inputs, pad_token_id=pad_id, **self.generation)
            new_tokens = generated[:, inputs["input_ids"].shape[1] :]
            outputs += self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return outputs


class LLMClaimSplitter:
    """Splits answers into claims with a causal language model and `parse_claims`.

    Args:
        runner: The language model to prompt (`CausalLMRunner`).
        max_input_words: Answers are cut to their first this many words.
        instruction: Instruction template with `{question}` and `{answer}` fields.
    """

    def __init__(self, runner: CausalLMRunner, max_input_words: int = 300, instruction: str = SPLIT_INSTRUCTION):
        self.runner = runner
        self.max_input_words = max_input_words
        self.instruction = instruction
        self.name = f"llm:{public_name(runner.model_id)}"

    def instructions(self, prompts: Sequence[str], answers: Sequence[str]) -> list[str]:
        return [
            self.instruction.format(
                question=prompt.strip(), answer=truncate_words(answer, self.max_input_words).strip()
            )
            for prompt, answer in zip(prompts, answers)
        ]

    def split(self, prompts: Sequence[str], answers: Sequence[str], seed: int = 0) -> list[list[str]]:
        todo, instructions = self._requests(prompts, answers)
        return self._claims(answers, todo, self.runner.complete(instructions, seed))

    def split_groups(self, groups: Sequence[tuple[Sequence[str], Sequence[str], int]]) -> list[list[list[str]]]:
        """`split` of several `(prompts, answers, seed)` groups: with a runner that completes groups together (vLLM)
        every group's requests go to the engine at once, each with the seed `split` gives it, so each group gets
        the claims `split` alone gives it; otherwise one `split` per group."""
        complete_groups = getattr(self.runner, "complete_groups", None)
        if complete_groups is None:
            return [self.split(prompts, answers, seed) for prompts, answers, seed in groups]
        requests = [self._requests(prompts, answers) for prompts, answers, _ in groups]
        outputs = complete_groups([(instructions, group[2]) for (_, instructions), group in zip(requests, groups)])
        return [self._claims(group[1], todo, texts) for group, (todo, _), texts in zip(groups, requests, outputs)]

    def _requests(self, prompts: Sequence[str], answers: Sequence[str]) -> tuple[list[int], list[str]]:
        """The indices of the non-empty answers and their instructions."""
        todo = [i for i, answer in enumerate(answers) if answer.strip()]
        return todo, self.instructions([prompts[i] for i in todo], [answers[i] for i in todo])

    @staticmethod
    def _claims(answers: Sequence[str], todo: Sequence[int], outputs: Sequence[str]) -> list[list[str]]:
        claims: list[list[str]] = [[] for _ in answers]
        for i, output in zip(todo, outputs):
            claims[i] = parse_claims(output)
        return claims


class LLMQuestionWriter:
    """Turns claims into polar questions with a causal language model and `parse_question`.

    When the output holds no question, the rule-based writer asks it instead; `num_fallbacks` counts those claims.
    """

    def __init__(self, runner: CausalLMRunner, instruction: str = QUESTION_INSTRUCTION):
        self.runner = runner
        self.instruction = instruction
        self.name = f"llm:{public_name(runner.model_id)}"
        self.fallback = RuleBasedQuestionWriter()
        self.num_fallbacks = 0

    def write(self, claims: Sequence[str], seed: int = 0) -> list[str]:
        return self._questions(claims, self.runner.complete(self._requests(claims), seed))

    def write_groups(self, groups: Sequence[tuple[Sequence[str], int]]) -> list[list[str]]:
        """`write` of several `(claims, seed)` groups, sent to the engine together like `LLMClaimSplitter.split_groups`
        when the runner can; each group gets the questions `write` alone gives it."""
        complete_groups = getattr(self.runner, "complete_groups", None)
        if complete_groups is None:
            return [self.write(claims, seed) for claims, seed in groups]
        outputs = complete_groups([(self._requests(claims), seed) for claims, seed in groups])
        return [self._questions(claims, texts) for (claims, _), texts in zip(groups, outputs)]

    def _requests(self, claims: Sequence[str]) -> list[str]:
        return [self.instruction.format(claim=claim.strip()) for claim in claims]

    def _questions(self, claims: Sequence[str], outputs: Sequence[str]) -> list[str]:
        questions = []
        for claim, output in zip(claims, outputs):
            question = parse_question(output)
            if question is None:
                self.num_fallbacks += 1
                logger.debug("No question in the question writer's output %r; using the rules", output)
                question = self.fallback.write([claim])[0]
            questions.append(question)
        return questions
