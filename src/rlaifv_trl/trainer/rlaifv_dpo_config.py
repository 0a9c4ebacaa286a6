"""Configuration of `RLAIFVDPOTrainer`: TRL's `DPOConfig` with the RLAIF-V paper's defaults."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from trl import DPOConfig


logger = logging.getLogger(__name__)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (x86 AVX512-BF16 or AMX, ARM BF16). Without it, bf16 autocast
    on the CPU is emulated and runs several times slower than float32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = {flag for line in cpuinfo if line.startswith(("flags", "Features")) for flag in line.split()}
    except OSError:  # not Linux: ask torch
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


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
        > Parameters that control the training

        encode_images_once (`bool`, *optional*, defaults to `False`):
            Run the vision tower once per pair instead of once for the chosen and once for the rejected answer (TRL's
            vision collator repeats every pair's images). The features, the loss and the gradients are the same (up
            to float rounding); a step saves the vision tower's share of the time on the repeated images. Families
            whose processor packs all of a batch's images into one row (MiniCPM-V 4.6) run it on every image, as
            without.

        > Parameters that control the logging

        log_length_normalized_rewards (`bool`, *optional*, defaults to `True`):
            Whether to log, on every batch, the length-normalized implicit reward of the chosen and rejected answers,
            `beta / T * sum_t [log pi(y_t) - log pi_ref(y_t)]` with T the number of answer tokens (the reward that
            [`LengthNormalizedRewardScorer`] ranks answers with), under `length_normalized_rewards/{chosen,rejected,
            margins,accuracies}`, and the mean answer lengths in tokens under `answer_length/{chosen,rejected}`. It
            reuses the log-probabilities the loss computes: no extra forward pass.

    > [!NOTE]
    > These parameters have default values different from [`~trl.DPOConfig`]:
    > - `bf16`: When training on the CPU (`use_cpu=True`, or no accelerator), defaults to `True` only if the CPU has
    >   native bfloat16 instructions (AVX512-BF16, AMX, ARM BF16), else to `False`: emulated bf16 runs 5-6x slower
    >   than float32. Set it explicitly to override. With no accelerator and bf16 on, `use_cpu` is set to `True`
    >   (`TrainingArguments` refuses bf16 without an accelerator otherwise).
    > - `learning_rate`: Defaults to `5e-7` instead of `1e-6` (use `1e-5` with a LoRA adapter).
    > - `lr_scheduler_type`: Defaults to `"cosine"` instead of `"linear"`.
    > - `warmup_steps`: Defaults to `0.05` (a ratio of the training steps) instead of `0`.
    > - `weight_decay`: Defaults to `0.01` instead of `0.0`.
    > - `num_train_epochs`: Defaults to `4` instead of `3`.
    > - `max_length`: Defaults to `2048` instead of `1024`.
    """

    # Which of the fields declared here decide results (see `rlaifv_trl.manifest`; those of `DPOConfig` and
    # `TrainingArguments` are listed in `rlaifv_trl.upstream_fields`). The others may change in a resumed run:
    # logging, and encoding images once (the same loss up to rounding).
    result_fields: ClassVar[frozenset[str]] = frozenset(
        {"learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay", "num_train_epochs", "max_length"}
    )
    fields_not_affecting_results: ClassVar[frozenset[str]] = frozenset(
        {"encode_images_once", "log_length_normalized_rewards"}
    )

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

    # Parameters that control the training
    encode_images_once: bool = field(
        default=False,
        metadata={"help": "Run the vision tower once per pair instead of once per chosen and rejected answer."},
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

    def __post_init__(self):
        follow_cpu_bf16(self)
        super().__post_init__()


def follow_cpu_bf16(config) -> None:
    """Unless set, choose a TRL config's bf16 for training on the CPU: off on a CPU without native bfloat16 (float32 is
    faster there); on with one, and then `use_cpu` is set when no accelerator is there (`TrainingArguments` refuses
    bf16 without an accelerator unless `use_cpu` says the CPU trains, which it does anyway)."""
    if config.bf16 is not None or config.fp16 or not _trains_on_cpu(config.use_cpu):
        return
    if not cpu_has_native_bf16():
        logger.info("Training on a CPU without native bfloat16: bf16 defaults to False (float32 is faster here)")
        config.bf16 = False
    elif not config.use_cpu:
        logger.info("No accelerator: training on the CPU (use_cpu=True), in bfloat16, which this CPU has natively")
        config.use_cpu = True


def _trains_on_cpu(use_cpu: bool) -> bool:
    return use_cpu or not (torch.cuda.is_available() or torch.accelerator.is_available())
