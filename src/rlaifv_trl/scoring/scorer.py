"""The length-normalized implicit reward of a DPO-trained vision-language model, for Best-of-N and TRL pipelines.

RLAIF-V scales at inference time with the DPO-trained policy as its own reward model (self-feedback): among N
sampled answers it keeps the one with the highest

    r(y) = beta / T * sum_t [log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t)]

(T answer tokens; without the 1/T the implicit reward favours short answers). `LengthNormalizedRewardScorer` computes
it with `rlaifv_trl.log_probs.length_normalized_reward`, the function `RLAIFVDPOTrainer` logs it with, over the same
tokens: the answer as the chat template renders it after the prompt, end-of-turn tokens included.

On answers sampled from the policy itself (Best-of-N) the log-ratio is a poor judge: a token drawn from pi has an
expected log(pi / pi_ref) equal to the KL between the two at that position, which is positive wherever training
moved the distribution, whether the token is right or wrong. On ShapesWorld the hallucinated objects and the
end-of-turn token, where DPO moved pi the most, carry the largest log-ratios, so the implicit reward prefers short
answers with hallucinations (`benchmarks/best_of_n_study.py`). The scorer's `mode="policy_log_prob"` ranks by the
policy's mean token log-probability instead, which needs no reference and picks far fewer hallucinations than a random
sample there, but mostly the policy's own greedy answer, so it does no better than greedy decoding. A pick that beats
greedy decoding ranks by claim labels (`rlaifv_trl.ranking.DivideAndConquerRanker`, the labeler's or the policy's own:
docs/efficacy.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import is_peft_model
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, PreTrainedModel, ProcessorMixin
from trl.data_utils import apply_chat_template, prepare_multimodal_messages
from trl.trainer.utils import get_config_model_id

from ..loading import resolve_model_name
from ..log_probs import length_normalized_reward, reference_context, token_log_probs
from ..prefix_sharing import continuation_log_probs, encode_prefix, prefix_sharing_refusal
from .implicit_reward import REWARD_CONFIG_NAME, RLAIFV_BETA, ImplicitRewardConfig


SCORE_MODES = ("implicit_reward", "policy_log_prob", "reference_log_prob")
_NEEDS_REFERENCE = ("implicit_reward", "reference_log_prob")

Prompt = str | list[dict[str, Any]]
Completion = str | list[dict[str, Any]]
Images = Image.Image | Sequence[Image.Image] | None


@dataclass
class BestOfN:
    """The outcome of `LengthNormalizedRewardScorer.best_of_n`.

    Attributes:
        best: The candidate with the highest reward, as given (`None` if no candidate could be scored).
        index: Its position among the candidates (`None` if no candidate could be scored).
        scores: The reward of every candidate, in order (`None` for a candidate that could not be scored).
    """

    best: Completion | None
    index: int | None
    scores: list[float | None]


@dataclass
class AnswerLogProbs:
    """Per-token log-probabilities of one scored answer (`LengthNormalizedRewardScorer.token_log_probs`).

    Attributes:
        token_ids: The answer tokens scored: the answer as the chat template renders it, end-of-turn tokens last.
        policy: log pi of each token (float32).
        reference: log pi_ref of each token (float32); `None` when the scorer has no reference.
        num_content_tokens: How many of the tokens are the answer's text; the rest are the end-of-turn tokens the
            template (or the EOS appended to a plain-text answer) adds.
    """

    token_ids: list[int]
    policy: torch.Tensor
    reference: torch.Tensor | None
    num_content_tokens: int


@dataclass
class _Row:
    """One (prompt, images, answer) to score: the rendered prompt, the answer's token ids and how many are text."""

    prompt_text: str
    images: list[Image.Image]
    answer_ids: list[int]
    num_content_tokens: int

    @property
    def prefix_key(self) -> tuple:
        """Rows with equal keys share their prompt + image prefix."""
        return (self.prompt_text, *(_image_fingerprint(image) for image in self.images))


@dataclass
class _PrefixGroup:
    """Rows sharing a prompt + images: the encoded prompt, the rows with answer tokens to score, and those tokens."""

    inputs: dict[str, torch.Tensor]
    rows: list[int]
    answers: list[list[int]]


def _image_fingerprint(image: Image.Image) -> str:
    return f"{image.mode}{image.size}" + hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest()


def _as_image_list(images: Images) -> list[Image.Image]:
    if images is None:
        return []
    return [images] if isinstance(images, Image.Image) else list(images)


def _message_text(message: dict[str, Any]) -> str:
    """The text of a message whose content is a string or a list of parts."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content if part.get("type") == "text")


def _embedded_images(prompt: list[dict[str, Any]]) -> list[Image.Image]:
    """Images already placed in the messages (`{"type": "image", "image": <PIL>}`), as `trl.GRPOTrainer` passes them."""
    return [
        part["image"]
        for message in prompt
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image" and part.get("image") is not None
    ]


class LengthNormalizedRewardScorer:
    """Scores answers of a vision-language model with the length-normalized implicit reward of RLAIF-V.

    r(y) = beta / T * sum_t [log pi(y_t) - log pi_ref(y_t)] over the T answer tokens, or the plain sum
    beta * sum_t [...] with `length_normalize=False`. The `mode` chooses the score:

    - `"implicit_reward"` (default): r(y) above, the paper's self-feedback reward.
    - `"policy_log_prob"`: 1 / T * sum_t log pi(y_t), the policy's mean token log-probability (its sum with
      `length_normalize=False`); `beta` and the reference are not used, and `ref_model` may be left out. The better
      Best-of-N scorer for answers sampled from the policy itself (see the module docstring).
    - `"reference_log_prob"`: 1 / T * sum_t log pi_ref(y_t), the reference's mean token log-probability (its sum
      with `length_normalize=False`); `beta` is not used. A second model judging the policy's samples: with the
      previous iteration as reference it did best on ShapesWorld, with the base policy less well than
      `"policy_log_prob"`.

    Every mode scores the same T tokens: the answer as the chat template renders it, end-of-turn tokens included
    (`token_log_probs` gives them one by one). Answers to the same prompt and image share one forward pass of that
    prefix; each batch of its answers runs packed into a few rows that read the prefix's KV cache in place.

    Edge cases, with a defined result rather than an error, so that a TRL run never stops on them:

    - An empty answer is rendered by the chat template as its end-of-turn tokens, which are scored like any other
      answer (T counts them, as in training). A plain-text (non-conversational) answer gets the EOS token appended,
      like `trl.DPOTrainer` does.
    - An answer longer than the context is scored on the tokens that fit in `max_length` after the prompt, the way
      `trl.DPOTrainer` truncates sequences.
    - When no answer token can be scored (the prompt alone fills `max_length`, or the answer has no token at all),
      the score is `None`: there is no evidence for any value, and TRL's `GRPOTrainer` and `OnlineDPOTrainer` read
      `None` as "no reward from this function" (NaN, left out of `nansum`). `best_of_n` ranks `None` last.

    Called as `scorer(prompts=..., completions=..., **columns)` it is a TRL reward function: it returns one float (or
    `None`) per completion and takes the images from the `images` or `image` column, or from the prompt messages.

    Args:
        model: The DPO-trained policy. The scorer puts it (and `ref_model`) in eval mode and never trains them.
        ref_model: The reference the policy was trained against. Optional for a PEFT model, whose reference is its
            base with the adapter disabled (or its frozen "ref" adapter if it has one).
        processor: The policy's processor; loaded from the model's name or path when `None`.
        beta: The DPO beta the policy was trained with (0.1 in RLAIF-V).
        length_normalize: Divide by the number of answer tokens (RLAIF-V) or not (the plain DPO implicit reward).
        max_length: Longest prompt + answer scored, in tokens; defaults to the model's `max_position_embeddings`.
        batch_size: Answers per forward pass.
        mode: `"implicit_reward"`, `"policy_log_prob"` or `"reference_log_prob"` (see above).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        ref_model: PreTrainedModel | None = None,
        processor: ProcessorMixin | None = None,
        beta: float = RLAIFV_BETA,
        length_normalize: bool = True,
        max_length: int | None = None,
        batch_size: int = 16,
        *,
        mode: str = "implicit_reward",
    ):
        if mode not in SCORE_MODES:
            raise ValueError(f"Unknown mode {mode!r}; expected one of {SCORE_MODES}")
        if ref_model is None and not is_peft_model(model) and mode in _NEEDS_REFERENCE:
            raise ValueError(
                f"Mode {mode!r} needs a reference: pass `ref_model`, or a PEFT model whose base (adapter "
                "disabled) is the reference."
            )
        if ref_model is model:
            raise ValueError("`model` and `ref_model` are the same object: the implicit reward would always be 0.")
        self.model = model.eval()
        self.ref_model = ref_model.eval() if ref_model is not None else None
        self.processor = processor or AutoProcessor.from_pretrained(get_config_model_id(model.config))
        self.beta = beta
        self.length_normalize = length_normalize
        self.max_length = max_length or model.config.get_text_config().max_position_embeddings
        self.batch_size = batch_size
        self.mode = mode
        # the name TRL logs the reward under
        self.__name__ = "length_normalized_reward" if mode == "implicit_reward" else f"mean_{mode}"

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str | os.PathLike,
        ref_model_name_or_path: str | os.PathLike | None = None,
        *,
        beta: float | None = None,
        length_normalize: bool | None = None,
        max_length: int | None = None,
        batch_size: int = 16,
        mode: str = "implicit_reward",
        revision: str | None = None,
        ref_revision: str | None = None,
        trust_remote_code: bool = False,
        **model_kwargs: Any,
    ) -> LengthNormalizedRewardScorer:
        """A scorer whose policy (and reference) load from local directories or Hub ids through the Auto classes.

        A policy trained by the recipe carries its reward settings (`implicit_reward.json`: beta, length
        normalization, the reference model and revision), so `from_pretrained(repo, revision="iteration-2")` needs
        nothing else; the arguments given here override them.

        Args:
            model_name_or_path: The policy. A PEFT adapter (a directory or repository with `adapter_config.json`) is
                loaded on top of its base model; without a reference, that base is the reference.
            ref_model_name_or_path: The reference model; defaults to the one the policy records, if any.
            beta: The DPO beta; defaults to the recorded one. A policy without `implicit_reward.json` (not saved by
                `RLAIFVDPOTrainer` or the recipe) needs it for `mode="implicit_reward"`.
            length_normalize: Divide by the answer length; defaults to the recorded choice, else `True`.
            max_length: Longest prompt + answer scored; defaults to the recorded training `max_length`, else the
                model's `max_position_embeddings`.
            mode: The score (see the class docstring); `"policy_log_prob"` loads no recorded reference model.
            revision: Revision of the policy repository.
            ref_revision: Revision of the reference repository (e.g. the previous iteration's branch).
            trust_remote_code: Allow models and processors that ship custom code (off unless asked for).
            model_kwargs: More arguments for `AutoModelForImageTextToText.from_pretrained` (e.g. `dtype`).
        """
        adapter_base = _adapter_base_model(model_name_or_path, revision)
        recorded = ImplicitRewardConfig.load(model_name_or_path, revision)
        if recorded is not None:
            beta = recorded.beta if beta is None else beta
            length_normalize = recorded.length_normalize if length_normalize is None else length_normalize
            max_length = recorded.max_length if max_length is None else max_length
            if ref_model_name_or_path is None and adapter_base is None and mode in _NEEDS_REFERENCE:
                ref_model_name_or_path, ref_revision = recorded.reference(model_name_or_path)
        if beta is None and mode == "implicit_reward":
            raise ValueError(
                f"{model_name_or_path} records no implicit-reward settings ({REWARD_CONFIG_NAME}, which "
                "`RLAIFVDPOTrainer.save_model` writes): pass the `beta` it was trained with."
            )
        beta = RLAIFV_BETA if beta is None else beta  # unused by the log-prob modes
        length_normalize = True if length_normalize is None else length_normalize
        load = {"trust_remote_code": trust_remote_code, **model_kwargs}
        if adapter_base is not None:
            from peft import PeftModel

            base = AutoModelForImageTextToText.from_pretrained(adapter_base, **load)
            model = PeftModel.from_pretrained(base, model_name_or_path, revision=revision)
        else:
            model = AutoModelForImageTextToText.from_pretrained(model_name_or_path, revision=revision, **load)
        ref_model = None
        if ref_model_name_or_path is not None:
            ref_model = AutoModelForImageTextToText.from_pretrained(
                resolve_model_name(ref_model_name_or_path), revision=ref_revision, **load
            )
        processor_source, processor_revision = model_name_or_path, revision
        if adapter_base is not None and not _has_file(model_name_or_path, "tokenizer_config.json", revision):
            processor_source, processor_revision = adapter_base, None  # an adapter saved without its processor
        processor = AutoProcessor.from_pretrained(
            processor_source, revision=processor_revision, trust_remote_code=trust_remote_code
        )
        return cls(model, ref_model, processor, beta, length_normalize, max_length, batch_size, mode=mode)

    def score(
        self,
        prompts: Sequence[Prompt],
        images: Sequence[Images] | None,
        completions: Sequence[Completion],
        share_prefix: bool = True,
    ) -> list[float | None]:
        """The reward of each completion.

        Args:
            prompts: Conversational prompts (TRL format, with `{"type": "image"}` placeholders or embedded images), or
                prompt strings already rendered by the chat template.
            images: The image (or list of images) of each prompt; `None` when the images are embedded in the prompts.
            completions: The answers: strings or conversational assistant turns.
            share_prefix: Encode each distinct prompt + image once for all its answers. `False` runs every answer in
                its own full forward pass (same scores up to float rounding; for checks and benchmarks).

        Returns:
            One float per completion, or `None` where no answer token can be scored (see the class docstring).
        """
        return [
            None if answer is None else self._reward(answer)
            for answer in self.token_log_probs(prompts, images, completions, share_prefix)
        ]

    def token_log_probs(
        self,
        prompts: Sequence[Prompt],
        images: Sequence[Images] | None,
        completions: Sequence[Completion],
        share_prefix: bool = True,
    ) -> list[AnswerLogProbs | None]:
        """Per-token log-probabilities of each completion under the policy and the reference (arguments as `score`).

        `None` where no answer token can be scored; an answer cut to `max_length` has only the tokens that fit. The
        reference's are `None` when the scorer has none (`mode="policy_log_prob"` without `ref_model`).
        """
        if images is None:
            images = [None] * len(prompts)
        if not len(prompts) == len(images) == len(completions):
            raise ValueError(
                f"Got {len(prompts)} prompts, {len(images)} images and {len(completions)} completions; expected as many"
            )
        rows = [
            self._prepare(prompt, image, completion) for prompt, image, completion in zip(prompts, images, completions)
        ]
        groups = self._prefix_groups(rows)
        policy = self._answer_log_probs(self.model, groups, len(rows), share_prefix)
        reference: list[torch.Tensor | None] = [None] * len(rows)
        if self.ref_model is not None or (is_peft_model(self.model) and self.mode in _NEEDS_REFERENCE):
            with reference_context(self.model) if self.ref_model is None else contextlib.nullcontext():
                reference = self._answer_log_probs(self.ref_model or self.model, groups, len(rows), share_prefix)
        answers: list[AnswerLogProbs | None] = []
        for row, policy_logps, ref_logps in zip(rows, policy, reference):
            if policy_logps is None:
                answers.append(None)
                continue
            kept = len(policy_logps)
            answers.append(
                AnswerLogProbs(
                    token_ids=row.answer_ids[:kept],
                    policy=policy_logps.float().cpu(),
                    reference=None if ref_logps is None else ref_logps.float().cpu(),
                    num_content_tokens=min(row.num_content_tokens, kept),
                )
            )
        return answers

    def _reward(self, answer: AnswerLogProbs) -> float:
        """The score of one answer from its per-token log-probabilities, by `self.mode`."""
        policy, reference = answer.policy, answer.reference
        if self.mode in ("policy_log_prob", "reference_log_prob"):
            logps = policy if self.mode == "policy_log_prob" else reference
            return (logps.mean() if self.length_normalize else logps.sum()).item()
        return length_normalized_reward(
            policy.sum(), reference.sum(), torch.tensor(len(policy)), self.beta, self.length_normalize
        ).item()

    def best_of_n(self, prompt: Prompt, image: Images, candidates: Sequence[Completion]) -> BestOfN:
        """Pick the best of N candidate answers to one prompt; the prompt + image prefix is encoded once."""
        scores = self.score([prompt] * len(candidates), [image] * len(candidates), candidates)
        scored = [i for i, score in enumerate(scores) if score is not None]
        if not scored:
            return BestOfN(best=None, index=None, scores=scores)
        index = max(scored, key=lambda i: scores[i])  # the first of equal scores
        return BestOfN(best=candidates[index], index=index, scores=scores)

    def __call__(
        self, prompts: Sequence[Prompt], completions: Sequence[Completion], **columns: Any
    ) -> list[float | None]:
        """TRL reward function: one reward per completion; images from the `images` / `image` columns or the prompts."""
        if columns.get("images") is not None:
            images = columns["images"]
        elif columns.get("image") is not None:
            images = columns["image"]
        else:
            images = None
        return self.score(prompts, images, completions)

    def _prepare(self, prompt: Prompt, images: Images, completion: Completion) -> _Row:
        """Render a prompt and its answer as `trl.DPOTrainer`'s vision collator does, and tokenize the answer."""
        images = _as_image_list(images)
        tokenizer = self.processor.tokenizer
        if isinstance(prompt, str):  # already rendered by the chat template
            prompt_text = prompt
            answer = completion if isinstance(completion, str) else _message_text(completion[-1])
            answer = answer.removesuffix(tokenizer.eos_token)
            answer_text = answer + tokenizer.eos_token
        else:
            embedded = _embedded_images(prompt)
            if embedded:
                images = embedded
                messages = prepare_multimodal_messages(prompt)
            else:
                messages = prepare_multimodal_messages(prompt, images=images)
            if isinstance(completion, str):
                completion = [{"role": "assistant", "content": completion}]
            answer = _message_text(completion[-1])
            rendered = apply_chat_template(
                {"prompt": messages, "completion": prepare_multimodal_messages(completion)}, self.processor
            )
            prompt_text, answer_text = rendered["prompt"], rendered["completion"]
        answer_ids = tokenizer(answer_text, add_special_tokens=False)["input_ids"]
        return _Row(prompt_text, images, answer_ids, _content_length(tokenizer, answer, answer_text, answer_ids))

    def _prefix_groups(self, rows: list[_Row]) -> list[_PrefixGroup]:
        """Rows grouped by prompt + images, with the prompt encoded once and the answers cut to `max_length`."""
        members_by_key: dict[tuple, list[int]] = defaultdict(list)
        for index, row in enumerate(rows):
            members_by_key[row.prefix_key].append(index)
        groups = []
        for members in members_by_key.values():
            first = rows[members[0]]
            inputs = self.processor(
                text=[first.prompt_text], images=first.images or None, return_tensors="pt", add_special_tokens=False
            )
            budget = self.max_length - inputs["input_ids"].shape[1]
            scorable = [index for index in members if budget > 0 and rows[index].answer_ids]
            if scorable:
                answers = [rows[index].answer_ids[:budget] for index in scorable]
                groups.append(_PrefixGroup(inputs=inputs, rows=scorable, answers=answers))
        return groups

    @torch.no_grad()
    def _answer_log_probs(
        self, model: PreTrainedModel, groups: list[_PrefixGroup], num_rows: int, share_prefix: bool
    ) -> list[torch.Tensor | None]:
        """Log-probability of each scored answer token under `model` (`None` for rows with no token to score)."""
        results: list[torch.Tensor | None] = [None] * num_rows
        for group in groups:
            inputs = group.inputs.to(model.device)
            packed = sum(len(ids) for ids in group.answers)  # answers run packed: the cache holds all of them
            longest = inputs["input_ids"].shape[1] + packed
            if share_prefix and not prefix_sharing_refusal(model, longest):
                prefix = encode_prefix(model, inputs)
                logps = continuation_log_probs(model, prefix, group.answers, self.batch_size, pack=True)
            else:
                logps = [_full_forward_log_probs(model, inputs, answer) for answer in group.answers]
            for index, answer_logps in zip(group.rows, logps):
                results[index] = answer_logps
        return results


def _content_length(tokenizer: Any, answer: str, answer_text: str, answer_ids: list[int]) -> int:
    """How many leading tokens of `answer_ids` (the rendered `answer_text`) are the answer's own text.

    The rest are what the chat template adds after it (end-of-turn tokens). When the rendering does not start with the
    answer's tokens (a template that rewrites the answer), every token counts as text.
    """
    start = answer_text.find(answer) if answer else 0
    if start < 0:
        return len(answer_ids)
    head = tokenizer(answer_text[: start + len(answer)], add_special_tokens=False)["input_ids"]
    return len(head) if answer_ids[: len(head)] == head else len(answer_ids)


def _full_forward_log_probs(model: PreTrainedModel, prompt_inputs: dict, answer_ids: list[int]) -> torch.Tensor:
    """Log-probabilities of the answer tokens from one forward pass over prompt + answer."""
    answer = torch.as_tensor([answer_ids], device=prompt_inputs["input_ids"].device)
    inputs = dict(prompt_inputs)
    inputs["input_ids"] = torch.cat([prompt_inputs["input_ids"], answer], dim=1)
    inputs["attention_mask"] = torch.cat([prompt_inputs["attention_mask"], torch.ones_like(answer)], dim=1)
    for key in ("mm_token_type_ids", "token_type_ids"):  # answer tokens are text
        if key in prompt_inputs:
            inputs[key] = torch.cat([prompt_inputs[key], torch.zeros_like(answer)], dim=1)
    keep = len(answer_ids) + 1  # sliced again for models whose forward ignores `logits_to_keep`
    logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits[0, -keep:-1]
    return token_log_probs(logits, answer[0])


def _has_file(model_name_or_path: str | os.PathLike, filename: str, revision: str | None) -> bool:
    """Whether a local directory or Hub repository has `filename` at its root."""
    path = str(model_name_or_path)
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, filename))
    from huggingface_hub import file_exists

    return file_exists(path, filename, revision=revision)


def _adapter_base_model(model_name_or_path: str | os.PathLike, revision: str | None) -> str | None:
    """The base model of a PEFT adapter directory or repository, or `None` if it is not an adapter."""
    if not _has_file(model_name_or_path, "adapter_config.json", revision):
        return None
    from peft import PeftConfig

    return PeftConfig.from_pretrained(str(model_name_or_path), revision=revision).base_model_name_or_path
