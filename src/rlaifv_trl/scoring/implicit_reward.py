"""How a DPO-trained policy's implicit reward is computed, stored beside its weights (`implicit_reward.json`) by
`RLAIFVDPOTrainer.save_model` (and completed by the recipe), so that
`LengthNormalizedRewardScorer.from_pretrained(repo, revision="iteration-2")` needs nothing else: beta, whether the
reward is length-normalized, the longest scored sequence, the DPO loss, and which model is the reference."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trl import DPOConfig

from ..atomic_io import atomic_write_json


REWARD_CONFIG_NAME = "implicit_reward.json"
# RLAIF-V's DPO beta is TRL's default (0.1); `RLAIFVDPOConfig` inherits it, so both read this one value.
RLAIFV_BETA: float = next(field.default for field in dataclasses.fields(DPOConfig) if field.name == "beta")


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
        loss_type: The DPO loss(es) the policy was trained with (`DPOConfig.loss_type`); `None` when not recorded.
    """

    beta: float
    length_normalize: bool = True
    max_length: int | None = None
    reference_model: str | None = None
    reference_revision: str | None = None
    reference_path: str | None = None
    loss_type: list[str] | None = None

    @classmethod
    def from_dpo_config(cls, args: Any) -> ImplicitRewardConfig:
        """The settings a `DPOConfig` trains with (`beta`, `max_length`, `loss_type`), no reference yet."""
        return cls(beta=args.beta, max_length=args.max_length, loss_type=list(args.loss_type))

    def save(self, folder: str | os.PathLike) -> None:
        atomic_write_json(Path(folder) / REWARD_CONFIG_NAME, asdict(self), indent=2)

    @classmethod
    def load(cls, model_name_or_path: str | os.PathLike, revision: str | None = None) -> ImplicitRewardConfig | None:
        """The config stored with a policy (local folder or Hub repository), or `None` if it has none."""
        local = Path(model_name_or_path) / REWARD_CONFIG_NAME
        if Path(model_name_or_path).is_dir():
            return cls.from_file(local) if local.is_file() else None
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            path = hf_hub_download(str(model_name_or_path), REWARD_CONFIG_NAME, revision=revision)
        except EntryNotFoundError:
            return None
        return cls.from_file(path)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ImplicitRewardConfig:
        """The config in a JSON file; keys this release does not know (written by a later one) are ignored."""
        values = json.loads(Path(path).read_text(encoding="utf-8"))
        known = {item.name for item in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

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
