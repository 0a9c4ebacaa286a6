"""How a DPO-trained policy's implicit reward is computed, stored beside its weights (`implicit_reward.json`), so that
`LengthNormalizedRewardScorer.from_pretrained(repo, revision="iteration-2")` needs nothing else: beta, whether the
reward is length-normalized, the longest scored sequence, and which model is the reference."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .atomic_io import atomic_write_json


REWARD_CONFIG_NAME = "implicit_reward.json"


@dataclass
class ImplicitRewardConfig:
    """The implicit reward r(y) = beta / T * sum_t log(pi(y_t) / pi_ref(y_t)) of one policy.

    Attributes:
        beta: The DPO beta the policy was trained with.
        length_normalize: Divide by the number of answer tokens T (RLAIF-V) or not (plain DPO reward).
        max_length: Longest prompt + answer the policy was trained on, in tokens (`None`: no limit).
        reference_model: Hub id (or `builtin:` name) of the reference, `None` when it is only a local folder.
        reference_revision: Its revision (e.g. the previous iteration's branch).
        reference_path: The reference's folder relative to the policy's folder (a run's previous iteration), used
            when the policy is loaded from that run folder.
    """

    beta: float
    length_normalize: bool = True
    max_length: int | None = None
    reference_model: str | None = None
    reference_revision: str | None = None
    reference_path: str | None = None

    def save(self, folder: str | os.PathLike) -> None:
        atomic_write_json(Path(folder) / REWARD_CONFIG_NAME, asdict(self), indent=2)

    @classmethod
    def load(cls, model_name_or_path: str | os.PathLike, revision: str | None = None) -> ImplicitRewardConfig | None:
        """The config stored with a policy (local folder or Hub repository), or `None` if it has none."""
        local = Path(model_name_or_path) / REWARD_CONFIG_NAME
        if Path(model_name_or_path).is_dir():
            return cls(**json.loads(local.read_text(encoding="utf-8"))) if local.is_file() else None
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            path = hf_hub_download(str(model_name_or_path), REWARD_CONFIG_NAME, revision=revision)
        except EntryNotFoundError:
            return None
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))

    def reference(self, model_name_or_path: str | os.PathLike) -> tuple[str, str | None]:
        """The reference as (name or folder, revision) for a policy loaded from `model_name_or_path`."""
        if self.reference_path and Path(model_name_or_path).is_dir():
            folder = (Path(model_name_or_path) / self.reference_path).resolve()
            if folder.is_dir():
                return str(folder), None
        if self.reference_model:
            return self.reference_model, self.reference_revision
        raise ValueError(
            f"The reference of {model_name_or_path} is a local folder that is not available here: pass "
            "`ref_model_name_or_path` (push the run with `rlaifv-trl push --model-repo ...` to record the Hub one)."
        )
