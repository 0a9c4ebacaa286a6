"""`DivideAndConquerRanker`: candidates ordered by their claim-label scores, as RLAIF-V's feedback scores them.

Each answer is split into claims, each claim becomes a polar question, and the labeler answers every question with
the prompt's images and videos (`YesNoLabeler`, the visual prefix encoded once per prompt). An answer scores minus its rejected
claims, plus `confirmed_claim_weight` times its confirmed claims when that weight is set (as `FeedbackConfig` scores
answers for pairs); answers without a claim (empty, or nothing checkable) have no score and are ranked last, tied.

Tie-breaking rules (`tie_break`) among answers with the same score:
- "keep" (default): they stay tied.
- "fewer_rejected_then_more_claims": the answer with more claims first (at the same number of rejected claims, it
  says more that the labeler accepts); ties remain between equal claim counts.
- "labeler_margin": the answer whose claims the labeler accepts more confidently first (higher mean of
  p_yes - p_no over its claims); exact ties remain.

With `first_is_reference`, the first candidate is a reference (the policy's greedy answer, say) and answers
confirming fewer claims than it rank below all others: a Best-of-N pick that gives up no recall against the reference.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from PIL import Image
from transformers import PreTrainedModel, ProcessorMixin

from ..cards import public_name
from ..feedback.claims import ClaimSplitter, QuestionWriter, with_instruction
from ..feedback.config import DEFAULT_YES_NO_INSTRUCTION
from ..feedback.labeler import LabelGroup, YesNoLabeler
from ..feedback.pairs import answer_score
from ..feedback.rules import RuleBasedClaimSplitter, RuleBasedQuestionWriter
from ..feedback.sampling import derive_seed
from ..loading import ModelLoading, load_vlm
from ..validation import message_text
from ..video import Video
from .types import Ranking


TIE_BREAKS = ("keep", "fewer_rejected_then_more_claims", "labeler_margin")


def prompt_text(prompt: Any) -> str:
    """The instruction of a prompt: the text itself, or the text of a conversational prompt's last user turn."""
    if isinstance(prompt, str):
        return prompt.strip()
    users = [message for message in prompt if message.get("role") == "user"] or list(prompt)
    return message_text(users[-1]["content"]).strip() if users else ""


class DivideAndConquerRanker:
    """Ranks candidates by minus their rejected claims (RLAIF-V's divide-and-conquer score), optionally crediting
    their confirmed claims.

    Args:
        labeler_model: The labeler VLM (an `AutoModelForImageTextToText` model) or its name/path.
        labeler_processor: Its processor (required with a model object).
        claim_splitter: Splits answers into claims (default `RuleBasedClaimSplitter`).
        question_writer: Turns claims into polar questions (default `RuleBasedQuestionWriter`).
        tie_break: How answers with the same score are ordered ("keep", "fewer_rejected_then_more_claims",
            "labeler_margin"; see the module docstring).
        confirmed_claim_weight: Credit per confirmed claim added to the score (0: RLAIF-V's score); a pick that
            keeps more true claims (recall) at the same rejected claims.
        first_is_reference: The first candidate is a reference answer, such as the policy's greedy answer: answers
            confirming fewer claims than it rank below every answer that confirms as many or more, so the top answer
            never confirms fewer claims than the reference (Best-of-N guarded by greedy decoding; docs/efficacy.md).
        yes_no_instruction: Appended to every question sent to the labeler.
        batch_size: Questions per labeler forward pass.
        seed: Base seed of the splitter and writer (for those that sample), derived per prompt.
        loading: How a labeler given by name is loaded.
    """

    def __init__(
        self,
        labeler_model: PreTrainedModel | str | os.PathLike,
        labeler_processor: ProcessorMixin | None = None,
        claim_splitter: ClaimSplitter | None = None,
        question_writer: QuestionWriter | None = None,
        tie_break: str = "keep",
        confirmed_claim_weight: float = 0.0,
        first_is_reference: bool = False,
        yes_no_instruction: str = DEFAULT_YES_NO_INSTRUCTION,
        batch_size: int = 64,
        seed: int = 0,
        loading: ModelLoading | None = None,
    ):
        if tie_break not in TIE_BREAKS:
            raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
        if not (math.isfinite(confirmed_claim_weight) and confirmed_claim_weight >= 0):
            raise ValueError(f"confirmed_claim_weight must be a finite number >= 0, got {confirmed_claim_weight}")
        if isinstance(labeler_model, (str, os.PathLike)):
            labeler_model, loaded = load_vlm(labeler_model, loading, "labeler")
            labeler_processor = labeler_processor or loaded
        elif labeler_processor is None:
            raise ValueError("Pass the labeler's processor along with its model object")
        self.labeler = YesNoLabeler(labeler_model.eval(), labeler_processor, batch_size=batch_size)
        self.claim_splitter = claim_splitter or RuleBasedClaimSplitter()
        self.question_writer = question_writer or RuleBasedQuestionWriter()
        self.tie_break, self.yes_no_instruction, self.seed = tie_break, yes_no_instruction, seed
        self.confirmed_claim_weight, self.first_is_reference = confirmed_claim_weight, first_is_reference
        self.name = f"divide-and-conquer ({public_name(getattr(labeler_model.config, '_name_or_path', '') or None)})"

    def rank(
        self,
        prompt: Any,
        images_or_video: list[Image.Image],
        candidates: Sequence[str],
        videos: Sequence[Video] | None = None,
    ) -> Ranking:
        """The candidates of one prompt ordered by their scores; the labeler sees the prompt's images and `videos`
        (each a list of frames; a family with a video processor is needed)."""
        instruction = prompt_text(prompt)
        answers = list(candidates)
        seed = derive_seed(self.seed, instruction, "claims")
        claims = self.claim_splitter.split([instruction] * len(answers), answers, seed)
        flat = [claim for answer_claims in claims for claim in answer_claims]
        written = iter(
            self.question_writer.write(flat, derive_seed(self.seed, instruction, "questions")) if flat else []
        )
        questions = [with_instruction(next(written), self.yes_no_instruction) for _ in flat]
        labels = iter(
            self.labeler.label_group(LabelGroup(list(images_or_video), questions, [list(v) for v in videos or []]))
        )
        per_answer = [[next(labels) for _ in answer_claims] for answer_claims in claims]
        scores = [
            answer_score([label.accepted for label in answer], self.confirmed_claim_weight) for answer in per_answer
        ]
        if self.tie_break == "keep":
            keys: list[Any] = scores
        elif self.tie_break == "fewer_rejected_then_more_claims":
            keys = [None if s is None else (s, len(answer)) for s, answer in zip(scores, per_answer)]
        else:
            keys = [
                None if s is None else (s, sum(label.p_yes - label.p_no for label in answer) / len(answer))
                for s, answer in zip(scores, per_answer)
            ]
        if self.first_is_reference and answers:
            confirmed = [sum(label.accepted for label in answer) for answer in per_answer]
            keys = [None if key is None else (c >= confirmed[0], key) for key, c in zip(keys, confirmed)]
        return Ranking.from_keys(keys, scores)

    def rank_batch(
        self,
        prompts: Sequence[Any],
        images_or_videos: Sequence[list[Image.Image]],
        candidates: Sequence[Sequence[str]],
        videos: Sequence[Sequence[Video]] | None = None,
    ) -> list[Ranking]:
        """The rankings of several prompts (the labeler encodes each prompt's images and videos once)."""
        videos = videos or [[] for _ in prompts]
        return [
            self.rank(p, i, c, v) for p, i, c, v in zip(prompts, images_or_videos, candidates, videos, strict=True)
        ]
