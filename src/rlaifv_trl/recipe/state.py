"""What a recipe run has finished, recorded after every stage so that a rerun continues where it stopped."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts import atomic_write_text


STATE_FILE = "run_state.json"


@dataclass
class RunState:
    """Finished stages per iteration (`done[k]` = stage -> result) and the settings the run was started with.

    The file is rewritten atomically after each stage; a run started again with other settings refuses to mix
    its results with the earlier ones.
    """

    path: Path
    settings: dict[str, Any] = field(default_factory=dict)
    done: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def open(cls, root: str | Path, settings: dict[str, Any]) -> RunState:
        """Load the state of the run in `root`, or start one; raise if it was started with other settings."""
        path = Path(root) / STATE_FILE
        if not path.is_file():
            state = cls(path=path, settings=settings)
            state.save()
            return state
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["settings"] != settings:
            before, now = _flatten(data["settings"]), _flatten(settings)
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            raise ValueError(
                f"{root} holds a run started with other settings (changed: {changed}). Use another output_dir, or "
                "delete the folder to start over."
            )
        return cls(path=path, settings=data["settings"], done=data["done"])

    def finished(self, iteration: int, stage: str) -> bool:
        return stage in self.done.get(str(iteration), {})

    def result(self, iteration: int, stage: str) -> Any:
        return self.done[str(iteration)][stage]

    def mark(self, iteration: int, stage: str, result: Any = True) -> None:
        self.done.setdefault(str(iteration), {})[stage] = result
        self.save()

    def save(self) -> None:
        data = {"settings": self.settings, "done": self.done}
        atomic_write_text(self.path, json.dumps(data, indent=2, sort_keys=True, default=str))


def _flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys: `{"recipe": {"seed": 1}}` -> `{"recipe.seed": 1}`."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
