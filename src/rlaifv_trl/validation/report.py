"""What a pass over a dataset kept and skipped, grouped by cause: `kept + skipped == rows`, always."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic_io import atomic_write_json
from .problems import CODES, BadRow


logger = logging.getLogger(__name__)

EXAMPLES_PER_CODE = 5


class BadRowError(ValueError):
    """Raised by a strict pass on its first bad row: names the row, its id and the problem."""

    def __init__(self, what: str, row: int, row_id: Any, problem: BadRow):
        self.row, self.row_id, self.problem = row, row_id, problem
        super().__init__(f"{what}: row {row} (id {row_id!r}) is unusable [{problem.code}] {problem}")


@dataclass
class ValidationReport:
    """The rows a pass over a dataset (`what`) kept and skipped.

    Attributes:
        what: The entry point and dataset (e.g. `"RLAIFVDPOTrainer train dataset"`).
        num_rows: Rows seen (for a stream: so far).
        num_kept: Rows kept.
        skipped: One entry per skipped row: `{"row", "id", "code", "field", "message"}`.
    """

    what: str
    num_rows: int = 0
    num_kept: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def keep(self) -> None:
        self.num_rows += 1
        self.num_kept += 1

    def skip(self, row: int, row_id: Any, problem: BadRow, strict: bool = False) -> None:
        """Record a skipped row, or with `strict` raise `BadRowError` naming it."""
        if strict:
            raise BadRowError(self.what, row, row_id, problem)
        self.num_rows += 1
        entry = {"row": row, "id": row_id, "code": problem.code, "field": problem.field, "message": problem.message}
        self.skipped.append(entry)
        logger.debug("%s: skipping row %d: [%s] %s", self.what, row, problem.code, problem)

    def withdraw(self, row: int, row_id: Any, problem: BadRow, strict: bool = False) -> None:
        """Skip a row that was kept, found unusable by a later step (e.g. a value computed from it)."""
        self.num_kept -= 1
        self.num_rows -= 1
        self.skip(row, row_id, problem, strict)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def by_code(self) -> dict[str, dict[str, Any]]:
        """Per code: how many rows, what it means, the first message and the first few row ids."""
        counts = Counter(entry["code"] for entry in self.skipped)
        summary = {}
        for code, count in counts.most_common():
            entries = [entry for entry in self.skipped if entry["code"] == code]
            summary[code] = {
                "count": count,
                "meaning": CODES[code],
                "example": entries[0]["message"],
                "rows": [entry["id"] if entry["id"] is not None else entry["row"] for entry in entries][
                    :EXAMPLES_PER_CODE
                ],
            }
        return summary

    def summary(self) -> str:
        """A few lines: kept and skipped counts, then one line per code."""
        lines = [f"{self.what}: {self.num_kept} of {self.num_rows} rows kept, {self.num_skipped} skipped"]
        for code, info in self.by_code().items():
            lines.append(f"  {info['count']:>6}  {code}: {info['example']} (rows {info['rows']})")
        return "\n".join(lines)

    def log(self) -> None:
        (logger.warning if self.skipped else logger.info)("%s", self.summary())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "by_code": self.by_code()}

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict(), indent=2, default=str)

    @classmethod
    def load(cls, path: str | Path) -> ValidationReport:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data.pop("by_code", None)
        return cls(**data)
