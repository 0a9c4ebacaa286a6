"""Conquer: yes/no probabilities of polar questions about an image (or a video) from one forward pass each.

For every (image or video, prompt) group the labeler renders its conversation (the image(s), then one question) with the
processor's chat template, runs the part before the question once and keeps its KV cache
(`rlaifv_trl.prefix_sharing`), then runs all of the group's questions as continuations of that cache, in batches. The
next-token distribution at the first answer position gives p_yes = p("yes") + p("Yes") and p_no = p("no") + p("No")
(softmax over the full vocabulary); a claim is accepted only if p_yes > p_no. A question whose tokens do not extend the
prefix's tokens (a tokenizer that merges across the boundary) gets a plain full forward instead, counted in
`num_full_forwards`.

The questions of a batch run packed into a few rows that read the prefix cache in place (`next_token_logits`), as
many rows as hold the least memory: attention spans only the questions of a row, and the prefix is repeated per row,
not per question, one layer at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image
from transformers import PreTrainedModel, ProcessorMixin

from ..prefix_sharing import encode_prefix, next_token_logits, prefix_sharing_refusal
from ..video import Video, processor_inputs


_SENTINEL = "Q7f3e9c1d0bQUESTION"


@dataclass
class LabelGroup:
    """The questions about one (image(s) or video(s), prompt): they share the encoded visual prefix. `videos` holds
    videos as lists of frames."""

    images: list[Image.Image]
    questions: list[str] = field(default_factory=list)
    videos: list[Video] = field(default_factory=list)


@dataclass(frozen=True)
class YesNoLabel:
    """The labeler's answer to one polar question."""

    p_yes: float
    p_no: float

    @property
    def accepted(self) -> bool:
        """A claim holds only if "yes" is strictly more likely than "no" (a tie is a rejection)."""
        return self.p_yes > self.p_no


def single_token_ids(tokenizer, words: Sequence[str]) -> list[int]:
    """The token id of each word, which must be a single token."""
    ids = []
    for word in words:
        encoded = tokenizer.encode(word, add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(f"{word!r} is not a single token of the labeler's tokenizer ({encoded})")
        ids.append(encoded[0])
    return ids


def labeler_messages(num_images: int, question: str, num_videos: int = 0) -> list[dict]:
    """The labeler's conversation: one user turn with the video(s), the image(s) and the question."""
    visuals = [{"type": "video"} for _ in range(num_videos)] + [{"type": "image"} for _ in range(num_images)]
    return [{"role": "user", "content": [*visuals, {"type": "text", "text": question}]}]


def render_question(processor: ProcessorMixin, num_images: int, question: str, num_videos: int = 0) -> str:
    """The labeler's input text for one question about `num_images` images (and `num_videos` videos), ending with
    the assistant header."""
    messages = labeler_messages(num_images, question, num_videos)
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


class YesNoLabeler:
    """Labels polar questions about images with a vision-language model, one forward pass per question.

    Args:
        model: Any `AutoModelForImageTextToText` model (a separate labeler or the policy itself).
        processor: Its processor, with a chat template.
        batch_size: Questions per forward pass.
        yes_words: Tokens whose probabilities sum to p_yes.
        no_words: Tokens whose probabilities sum to p_no.
        pack: Run the questions of a forward pass packed into a few rows that read the prefix cache in place;
            `False` gives each question a left-padded row of its own (memory: questions x prefix, one layer at a
            time).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        processor: ProcessorMixin,
        batch_size: int = 64,
        yes_words: Sequence[str] = ("yes", "Yes"),
        no_words: Sequence[str] = ("no", "No"),
        pack: bool = True,
    ):
        self.model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.batch_size = batch_size
        self.pack = pack
        self.yes_ids = torch.tensor(single_token_ids(self.tokenizer, yes_words))
        self.no_ids = torch.tensor(single_token_ids(self.tokenizer, no_words))
        self.num_full_forwards = 0
        self._templates: dict[tuple[int, int, str | None], tuple[str, str] | None] = {}

    def render(self, num_images: int, question: str, num_videos: int = 0) -> str:
        """The labeler's input text for one question, ending with the assistant header."""
        return render_question(self.processor, num_images, question, num_videos)

    def _probabilities(self, logits: torch.Tensor) -> list[YesNoLabel]:
        probs = logits.float().softmax(-1)
        p_yes = probs[:, self.yes_ids.to(probs.device)].sum(-1).tolist()
        p_no = probs[:, self.no_ids.to(probs.device)].sum(-1).tolist()
        return [YesNoLabel(yes, no) for yes, no in zip(p_yes, p_no)]

    def _inputs(
        self, text: str, images: list[Image.Image], videos: list[Video] | None = None
    ) -> dict[str, torch.Tensor]:
        inputs = processor_inputs(
            self.processor, [text], [images], [videos or []], return_tensors="pt", add_special_tokens=False
        )
        return inputs.to(self.model.device)

    @torch.no_grad()
    def full_forward(self, images: list[Image.Image], question: str, videos: list[Video] | None = None) -> YesNoLabel:
        """The label of one question from a plain forward over the whole input (no cache reuse)."""
        videos = videos or []
        text = self.render(len(images), question, len(videos))
        logits = self.model(**self._inputs(text, images, videos)).logits[:, -1]
        return self._probabilities(logits)[0]

    def _template(self, num_images: int, num_videos: int = 0) -> tuple[str, str] | None:
        """(text before, text after) the question in the rendered conversation, or None when the chat template does
        not insert the question verbatim. Cached per number of images and videos and chat template."""
        key = (num_images, num_videos, self.processor.chat_template)
        if key not in self._templates:
            rendered = self.render(num_images, _SENTINEL, num_videos)
            parts = rendered.split(_SENTINEL)
            probe = "Is the probe question here? Please answer yes or no."
            verbatim = len(parts) == 2 and self.render(num_images, probe, num_videos) == parts[0] + probe + parts[1]
            self._templates[key] = (parts[0], parts[1]) if verbatim and parts[0] else None
        return self._templates[key]

    def _continuations(
        self, num_images: int, questions: Sequence[str], num_videos: int = 0
    ) -> tuple[str | None, dict[int, list[int]]]:
        """The shared prefix text and, for each question whose tokens extend the prefix's tokens, its own tokens."""
        template = self._template(num_images, num_videos)
        if template is None:
            return None, {}
        before, after = template
        texts = [before + question + after for question in questions]
        encoded = self.tokenizer([before, *texts], add_special_tokens=False)["input_ids"]
        prefix_ids, continuations = encoded[0], {}
        for i, ids in enumerate(encoded[1:]):
            if ids[: len(prefix_ids)] == prefix_ids and len(ids) > len(prefix_ids):
                continuations[i] = ids[len(prefix_ids) :]
        return before, continuations

    @torch.no_grad()
    def label_group(self, group: LabelGroup) -> list[YesNoLabel]:
        """Labels of one group's questions: the image prefix is encoded once and reused by every question, and a
        question asked several times (the same claim in several answers) is run once."""
        if not group.questions:
            return []
        unique = list(dict.fromkeys(group.questions))
        prefix_text, continuations = self._continuations(len(group.images), unique, len(group.videos))
        labels: dict[str, YesNoLabel] = {}
        if continuations:
            inputs = self._inputs(prefix_text, group.images, group.videos)
            longest = inputs["input_ids"].shape[1] + max(len(ids) for ids in continuations.values())
            if prefix_sharing_refusal(self.model, longest):
                continuations = {}  # plain forwards below
        if continuations:
            prefix = encode_prefix(self.model, inputs)
            order = sorted(continuations, key=lambda i: len(continuations[i]))  # similar lengths batch together
            ids = [continuations[i] for i in order]
            logits = next_token_logits(self.model, prefix, ids, self.batch_size, pack=self.pack)
            for i, label in zip(order, self._probabilities(logits)):
                labels[unique[i]] = label
        for question in unique:
            if question not in labels:
                self.num_full_forwards += 1
                labels[question] = self.full_forward(group.images, question, group.videos)
        return [labels[question] for question in group.questions]

    def label(self, groups: Sequence[LabelGroup]) -> list[list[YesNoLabel]]:
        """Labels of every group's questions, in order."""
        return [self.label_group(group) for group in groups]
