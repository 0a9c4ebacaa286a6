"""The run report: counts per stage, rows that gave no pair and why, and timings."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic_io import atomic_write_json


@dataclass
class RunReport:
    """What a feedback run did.

    Every input row either produced at least one preference pair or appears in `skipped` (unusable input, or a stage
    that failed on it) or in `rows_without_pairs` (usable, but no pair survived).

    Attributes:
        num_rows: Rows in the prompt dataset.
        num_prompts: Rows whose candidates were sampled.
        num_candidates: Candidate answers sampled.
        num_empty_answers: Candidates with no text.
        num_answers_without_claims: Non-empty candidates in which the splitter found no claim.
        num_claims: Claims (= polar questions) labeled.
        num_rejected_claims: Claims the labeler rejected (p_yes <= p_no).
        num_scored_answers: Candidates with a score (at least one claim).
        num_labeler_full_forwards: Distinct questions of a prompt labeled by a plain forward, because their tokens did
            not extend the shared prefix's tokens.
        num_question_writer_fallbacks: Claims whose language-model question was unusable and that the rules asked.
        num_possible_pairs: Pairs with a large enough score gap, before sampling.
        num_sampled_pairs: Pairs after sampling `pairs_per_prompt` per prompt.
        num_pairs: Pairs in the preference dataset (after length balancing).
        length_balance_ratio: The cut ratio chosen by length balancing (None when off or nothing to balance).
        length_gap_before: Relative gap of mean chosen and rejected lengths before length balancing.
        length_gap_after: The same after.
        skipped: Rows skipped, each `{"row", "prompt_id", "stage", "code", "field", "reason"}` (codes:
            `rlaifv_trl.validation.CODES`).
        rows_without_pairs: Usable rows that gave no pair, each `{"row", "prompt_id", "reason"}`.
        seconds: Compute time per stage summed over shards (including shards of earlier, resumed runs).
        wall_seconds: Wall-clock time per stage of this call on the main process.
        num_processes: Processes that ran this call.
    """

    num_rows: int = 0
    num_prompts: int = 0
    num_candidates: int = 0
    num_empty_answers: int = 0
    num_answers_without_claims: int = 0
    num_claims: int = 0
    num_rejected_claims: int = 0
    num_scored_answers: int = 0
    num_labeler_full_forwards: int = 0
    num_question_writer_fallbacks: int = 0
    num_possible_pairs: int = 0
    num_sampled_pairs: int = 0
    num_pairs: int = 0
    length_balance_ratio: float | None = None
    length_gap_before: float | None = None
    length_gap_after: float | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)
    rows_without_pairs: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: dict[str, float] = field(default_factory=dict)
    num_processes: int = 1

    @property
    def skip_reasons(self) -> dict[str, int]:
        """How many rows were skipped, per code, and how many gave no pair, per reason."""
        causes = [entry["code"] for entry in self.skipped] + [entry["reason"] for entry in self.rows_without_pairs]
        return dict(Counter(causes).most_common())

    def skipped_by_code(self) -> dict[str, dict[str, Any]]:
        """Per code of the skipped rows: how many, an example message and the first few row ids."""
        grouped: dict[str, dict[str, Any]] = {}
        for entry in self.skipped:
            info = grouped.setdefault(entry["code"], {"count": 0, "example": entry["reason"], "rows": []})
            info["count"] += 1
            if len(info["rows"]) < 5:
                info["rows"].append(entry["prompt_id"] if entry["prompt_id"] is not None else entry["row"])
        return grouped

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "skip_reasons": self.skip_reasons, "skipped_by_code": self.skipped_by_code()}

    def save(self, path: str | Path) -> None:
        atomic_write_json(Path(path), self.to_dict(), ensure_ascii=False)

    @classmethod
    def load(cls, path: str | Path) -> RunReport:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
        data.pop("skip_reasons", None)
        data.pop("skipped_by_code", None)
        return cls(**data)
