"""Configuration of `RLAIFVDPOTrainer`: TRL's `DPOConfig` with the RLAIF-V paper's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig


@dataclass
class RLAIFVDPOConfig(DPOConfig):
    r"""
    Configuration class for the [`RLAIFVDPOTrainer`].

    A [`~trl.DPOConfig`] whose defaults are the DPO settings of RLAIF-V ([paper](https://huggingface.co/papers/2405.17220)):
    sigmoid loss, `beta=0.1`, `learning_rate=5e-7`, cosine schedule with 5% warmup, `weight_decay=0.01`, 4 epochs per
    iteration and sequences of up to 2048 tokens. With a LoRA adapter (`peft_config`), the paper trains with
    `learning_rate=1e-5` instead. RLAIF-V computes the reference log-probabilities once per iteration and stores them
    with the data: set `precompute_ref_log_probs=True`, which [`RLAIFVDPOTrainer`] supports for vision datasets too.

    Parameters:
        > Parameters that control the logging

        log_length_normalized_rewards (`bool`, *optional*, defaults to `True`):
            Whether to log, on every batch, the length-normalized implicit reward of the chosen and rejected answers,
            `beta / T * sum_t [log pi(y_t) - log pi_ref(y_t)]` with T the number of answer tokens (the reward that
            [`LengthNormalizedRewardScorer`] ranks answers with), under `length_normalized_rewards/{chosen,rejected,
            margins,accuracies}`, and the mean answer lengths in tokens under `answer_length/{chosen,rejected}`. It
            reuses the log-probabilities the loss computes: no extra forward pass.

    > [!NOTE]
    > These parameters have default values different from [`~trl.DPOConfig`]:
    > - `learning_rate`: Defaults to `5e-7` instead of `1e-6` (use `1e-5` with a LoRA adapter).
    > - `lr_scheduler_type`: Defaults to `"cosine"` instead of `"linear"`.
    > - `warmup_steps`: Defaults to `0.05` (a ratio of the training steps) instead of `0`.
    > - `weight_decay`: Defaults to `0.01` instead of `0.0`.
    > - `num_train_epochs`: Defaults to `4` instead of `3`.
    > - `max_length`: Defaults to `2048` instead of `1024`.
    """

    # Parameters whose default values are overridden from DPOConfig
    learning_rate: float = field(
        default=5e-7,
        metadata={"help": "The initial learning rate for AdamW. RLAIF-V uses 5e-7, and 1e-5 with a LoRA adapter."},
    )
    lr_scheduler_type: str = field(
        default="cosine",
        metadata={"help": "The scheduler type to use."},
    )
    warmup_steps: float = field(
        default=0.05,
        metadata={
            "help": "Linear warmup over `warmup_steps`: a number of steps if at least 1, else a ratio of the total "
            "training steps."
        },
    )
    weight_decay: float = field(
        default=0.01,
        metadata={"help": "Weight decay for AdamW if we apply some."},
    )
    num_train_epochs: float = field(
        default=4.0,
        metadata={"help": "Total number of training epochs to perform (per RLAIF-V iteration)."},
    )
    max_length: int | None = field(
        default=2048,
        metadata={
            "help": "Maximum length of the tokenized sequence. Sequences longer than `max_length` are truncated from "
            "the right. If `None`, no truncation is applied."
        },
    )

    # Parameters that control the logging
    log_length_normalized_rewards: bool = field(
        default=True,
        metadata={
            "help": "Whether to log, on every batch, the length-normalized implicit reward (beta / T * sum of the "
            "log-ratios of the T answer tokens) of the chosen and rejected answers, their margin and accuracy, and "
            "the mean answer lengths. It reuses the log-probabilities of the loss: no extra forward pass."
        },
    )
