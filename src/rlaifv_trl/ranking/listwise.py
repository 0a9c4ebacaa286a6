"""`ListwiseRanker`: a model reads all the candidates at once and replies with their order.

The model is any vision-language model (it sees the prompt's images, and its videos when passed as `videos=`, which
needs a family with a video processor) or any text-only causal language model (it sees the text only). The candidates
are shown labelled 1..n in one prompt (`DEFAULT_TEMPLATE`, configurable) and the reply is read by `parse_ranking`;
decoding is greedy.

Position bias: with `num_permutations=k` the candidates are shown in k presentation orders (the given order, then
k - 1 shuffles seeded by the ranker's seed and the prompt's text and candidates), each reply is mapped back to
candidate ids, and the replies are aggregated: "borda" (default; a candidate gets 1 point per candidate ranked below
it and 1/2 per candidate tied with it, averaged over the replies) or "mean_rank" (minus its mean group position).
Equal aggregate scores stay tied. A reply naming no label is left out; when no reply of a prompt is usable, the
`fallback` ranker ranks it, or without one every candidate is tied (status "unparseable"). A bad reply never raises.

`report` counts, over all queries (one query = one presentation order of one prompt): `num_queries`,
`num_unparseable`, `num_partial` (replies missing some labels) and how often the candidate shown first was put in
the top group of a usable reply (`first_position_win_rate`; 1/n when position does not matter and replies have no
ties).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from PIL import Image
from transformers import PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

from ..cards import public_name
from ..feedback.labeler import render_question
from ..feedback.llm_claims import render_instruction
from ..feedback.sampling import derive_seed
from ..generation import encode
from ..video import Video
from .divide_and_conquer import prompt_text
from .parsing import ParsedRanking, parse_ranking
from .types import Ranker, Ranking


DEFAULT_TEMPLATE = (
    "Question about the {medium}: {question}\n\n"
    "Here are {num_candidates} answers to it.\n\n"
    "{candidates}\n\n"
    "Rank the answers from best to worst. The best answer describes the {medium} correctly and mentions nothing that "
    'is not in it. Reply with the answer numbers only, best first, separated by ">", for example: {example}.'
)
CANDIDATE_TEMPLATE = "Answer {label}: {text}"
AGGREGATIONS = ("borda", "mean_rank")


@dataclass(frozen=True)
class ListwiseQuery:
    """One query: prompt `prompt` (its index in the batch) with its candidates shown in `order` (label k + 1 shows
    candidate `order[k]`)."""

    prompt: int
    order: list[int]
    text: str


@dataclass
class ListwiseReport:
    """What a listwise ranker's queries gave.

    Attributes:
        num_queries: Replies asked for (one per presentation order of each prompt).
        num_unparseable: Replies naming no candidate label.
        num_partial: Replies naming some labels but not all (the others were appended, tied, at the end).
        num_first_position_wins: Usable replies whose top group holds the candidate shown first.
        num_fallbacks: Prompts with no usable reply, ranked by the fallback ranker (or all tied).
    """

    num_queries: int = 0
    num_unparseable: int = 0
    num_partial: int = 0
    num_first_position_wins: int = 0
    num_fallbacks: int = 0

    @property
    def first_position_win_rate(self) -> float | None:
        """Share of usable replies that put the candidate shown first in their top group."""
        usable = self.num_queries - self.num_unparseable
        return self.num_first_position_wins / usable if usable else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "first_position_win_rate": self.first_position_win_rate}


def presentation_orders(num_candidates: int, num_permutations: int, seed: int) -> list[list[int]]:
    """The given order, then `num_permutations - 1` seeded shuffles, distinct while there are orders left."""
    identity = list(range(num_candidates))
    orders, rng = [identity], random.Random(seed)
    distinct = 1
    for k in range(2, num_candidates + 1):
        distinct *= k
    while len(orders) < num_permutations:
        order = identity[:]
        rng.shuffle(order)
        if order not in orders or len(orders) >= distinct:
            orders.append(order)
    return orders


def aggregate(parsed: Sequence[list[list[int]]], num_candidates: int, method: str = "borda") -> list[float]:
    """Per candidate, the aggregate score (higher is better) of several rankings given as tie groups of ids."""
    totals = [0.0] * num_candidates
    for groups in parsed:
        position = {i: p for p, group in enumerate(groups) for i in group}
        for i in range(num_candidates):
            if method == "mean_rank":
                totals[i] -= position[i]
            else:
                below = sum(position[j] > position[i] for j in range(num_candidates))
                tied = sum(position[j] == position[i] for j in range(num_candidates)) - 1
                totals[i] += below + 0.5 * tied
    return [round(total / len(parsed), 9) for total in totals]


def render_query(
    prompt: Any,
    candidates: Sequence[str],
    order: Sequence[int],
    template: str = DEFAULT_TEMPLATE,
    candidate_template: str = CANDIDATE_TEMPLATE,
    medium: str = "image",
) -> str:
    """The query showing `candidates` in `order` (shown label k is `candidates[order[k - 1]]`), as
    `ListwiseRanker.query` writes it; `medium` fills the template's `{medium}` ("image", or "video" for a prompt with
    videos)."""
    shown = "\n".join(
        candidate_template.format(label=k + 1, text=" ".join(candidates[i].split())) for k, i in enumerate(order)
    )
    example = " > ".join(str(label) for label in [2, 1, *range(3, len(order) + 1)][: len(order)])
    return template.format(
        question=prompt_text(prompt), num_candidates=len(order), candidates=shown, example=example, medium=medium
    )


class ListwiseRanker:
    """Ranks candidates by asking a model for their order (see the module docstring).

    Args:
        model: A vision-language model (`AutoModelForImageTextToText`) or a text-only causal language model.
        processor: The VLM's processor, or the language model's tokenizer.
        template: The query, with `{question}`, `{num_candidates}`, `{candidates}` (the labelled answers, one per
            line, as `candidate_template` writes them), `{example}` (e.g. "2 > 1 > 3") and `{medium}` ("image", or
            "video" for a prompt with videos) fields.
        candidate_template: How one answer is shown, with `{label}` (1..n) and `{text}`.
        num_permutations: Presentation orders per prompt (1: the given order only).
        aggregation: "borda" or "mean_rank", to combine the orders' replies.
        fallback: A ranker for prompts with no usable reply; `None` ties all their candidates.
        max_new_tokens: Longest reply.
        batch_size: Queries per `generate` call.
        seed: Base seed of the presentation orders.
        name: A name for reports (default: from the model).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        processor: ProcessorMixin | PreTrainedTokenizerBase,
        template: str = DEFAULT_TEMPLATE,
        candidate_template: str = CANDIDATE_TEMPLATE,
        num_permutations: int = 1,
        aggregation: str = "borda",
        fallback: Ranker | None = None,
        max_new_tokens: int = 32,
        batch_size: int = 8,
        seed: int = 0,
        name: str | None = None,
    ):
        if num_permutations < 1:
            raise ValueError(f"num_permutations must be at least 1, got {num_permutations}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self.model, self.processor = model.eval(), processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.vision = hasattr(processor, "image_processor")
        self.template, self.candidate_template = template, candidate_template
        self.num_permutations, self.aggregation, self.fallback = num_permutations, aggregation, fallback
        self.max_new_tokens, self.batch_size, self.seed = max_new_tokens, batch_size, seed
        self.name = name or f"listwise ({public_name(getattr(model.config, '_name_or_path', '') or None)})"
        self.report = ListwiseReport()

    def query(self, prompt: Any, candidates: Sequence[str], order: Sequence[int], medium: str = "image") -> str:
        """The query text showing `candidates` in `order` (shown label k is `candidates[order[k - 1]]`)."""
        return render_query(prompt, candidates, order, self.template, self.candidate_template, medium)

    def rank(
        self,
        prompt: Any,
        images_or_video: list[Image.Image],
        candidates: Sequence[str],
        videos: Sequence[Video] | None = None,
    ) -> Ranking:
        return self.rank_batch([prompt], [images_or_video], [candidates], [videos or []])[0]

    def rank_batch(
        self,
        prompts: Sequence[Any],
        images_or_videos: Sequence[list[Image.Image]],
        candidates: Sequence[Sequence[str]],
        videos: Sequence[Sequence[Video]] | None = None,
    ) -> list[Ranking]:
        """Rank several prompts: all their queries run in batches of `batch_size`; each query carries its prompt's
        images and `videos`."""
        queries = self.queries(prompts, candidates, videos)
        replies = self._generate(
            [q.text for q in queries],
            [list(images_or_videos[q.prompt] or []) for q in queries],
            [list(videos[q.prompt] or []) for q in queries] if videos else None,
        )
        return self.combine(queries, replies, prompts, images_or_videos, candidates, videos)

    def queries(
        self,
        prompts: Sequence[Any],
        candidates: Sequence[Sequence[str]],
        videos: Sequence[Sequence[Video]] | None = None,
    ) -> list[ListwiseQuery]:
        """The queries of several prompts: one per presentation order, each prompt's orders together; a prompt with
        `videos` is asked about "the video"."""
        queries = []
        for index, (prompt, answers) in enumerate(zip(prompts, candidates, strict=True)):
            key = prompt_text(prompt) + "\x1f" + "\x1f".join(answers)
            seed = derive_seed(self.seed, key, "presentation orders")
            medium = "video" if videos and videos[index] else "image"
            for order in presentation_orders(len(answers), self.num_permutations, seed):
                queries.append(ListwiseQuery(index, order, self.query(prompt, answers, order, medium)))
        return queries

    def combine(
        self,
        queries: Sequence[ListwiseQuery],
        replies: Sequence[str | None],
        prompts: Sequence[Any],
        images_or_videos: Sequence[list[Image.Image]],
        candidates: Sequence[Sequence[str]],
        videos: Sequence[Sequence[Video]] | None = None,
    ) -> list[Ranking]:
        """The rankings read from the replies to `queries` (counted in `report`), aggregated per prompt; prompts
        without a usable reply go to the fallback."""
        parsed: list[list[list[list[int]]]] = [[] for _ in prompts]
        statuses: list[set[str]] = [set() for _ in prompts]
        for query, reply in zip(queries, replies, strict=True):
            result = self._read(reply, query.order)
            statuses[query.prompt].add(result.status)
            if result.status != "unparseable":
                parsed[query.prompt].append([[query.order[k] for k in group] for group in result.groups])
        rankings = []
        for index, answers in enumerate(candidates):
            if parsed[index]:
                scores = aggregate(parsed[index], len(answers), self.aggregation)
                status = "ok" if statuses[index] == {"ok"} else "partial"
                rankings.append(Ranking.from_keys(scores, scores, status))
            else:
                prompt_videos = list(videos[index] or []) if videos else []
                rankings.append(self._fall_back(prompts[index], images_or_videos[index], answers, prompt_videos))
        return rankings

    def _read(self, reply: str | None, order: Sequence[int]) -> ParsedRanking:
        """Parse one reply and count it in the report; a failure of any kind is an unparseable reply."""
        self.report.num_queries += 1
        try:
            result = parse_ranking(reply, len(order))
        except Exception:  # noqa: BLE001 - a bad reply must never stop a run
            result = ParsedRanking([list(range(len(order)))], "unparseable", 0)
        if result.status == "unparseable":
            self.report.num_unparseable += 1
        else:
            self.report.num_partial += result.status == "partial"
            self.report.num_first_position_wins += 0 in result.groups[0]
        return result

    def _fall_back(
        self, prompt: Any, images: list[Image.Image], answers: Sequence[str], videos: list[Video]
    ) -> Ranking:
        self.report.num_fallbacks += 1
        if self.fallback is None:
            return Ranking.all_tied(len(answers), status="unparseable")
        ranking = self.fallback.rank(prompt, images, answers, **({"videos": videos} if videos else {}))
        return Ranking(ranking.groups, ranking.ranks, ranking.scores, "fallback")

    @torch.no_grad()
    def _generate(
        self, texts: Sequence[str], images: Sequence[list[Image.Image]], videos: Sequence[list[Video]] | None = None
    ) -> list[str]:
        replies: list[str] = []
        pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        )
        generation = {"do_sample": False, "max_new_tokens": self.max_new_tokens, "pad_token_id": pad_id}
        for start in range(0, len(texts), self.batch_size):
            batch, batch_images = texts[start : start + self.batch_size], images[start : start + self.batch_size]
            batch_videos = videos[start : start + self.batch_size] if videos else [[] for _ in batch]
            if self.vision:
                rendered = [
                    render_question(self.processor, len(imgs), t, len(vids))
                    for t, imgs, vids in zip(batch, batch_images, batch_videos)
                ]
                inputs = encode(self.processor, rendered, batch_images, self.model.device, batch_videos)
            else:
                chat = bool(getattr(self.tokenizer, "chat_template", None))
                if self.tokenizer.pad_token_id is None:
                    self.tokenizer.pad_token = self.tokenizer.eos_token
                inputs = self.tokenizer(
                    [render_instruction(self.tokenizer, t) for t in batch], return_tensors="pt", padding=True,
                    padding_side="left", add_special_tokens=not chat,
                ).to(self.model.device)  # fmt: skip
            output = self.model.generate(**inputs, **generation)
            replies += self.tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return replies
