"""`RLAIFVDPOTrainer`: TRL's `DPOTrainer` with what RLAIF-V needs for vision-language models.

- Reference log-probabilities precomputed once for vision datasets (TRL refuses `precompute_ref_log_probs` there),
  stored as the dataset columns `ref_chosen_logps` / `ref_rejected_logps`; a dataset that already has them runs no
  reference forward pass, and no reference model is loaded.
- The length-normalized implicit reward logged on every batch, computed like `LengthNormalizedRewardScorer` does.
- Bad rows left out before anything reads them: unreadable or refused images, malformed prompts or answers, identical
  answers, answers `max_length` would cut away entirely, special tokens in the text (see `rlaifv_trl.validation`);
  each is counted in a report by cause (with `row_validation=RowValidation(strict=True)` the first raises instead).
  A dataset without bad rows trains exactly as with `trl.DPOTrainer`.

Everything else is `trl.DPOTrainer` unchanged. The hook points it relies on are checked by
`tests/test_trainer_trl_internals.py`, which fails with an explicit message if a TRL release moves them.
"""

from __future__ import annotations

import contextlib
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.logging import get_logger
from accelerate.utils import is_peft_model
from datasets import Dataset, Image, IterableDataset, List
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForVisionPreference
from trl.trainer.utils import get_config_model_id

from ..log_probs import length_normalized_reward
from ..scoring.implicit_reward import REWARD_CONFIG_NAME, ImplicitRewardConfig
from ..validation import BadRow, RowValidation, ValidationReport
from ..video import VIDEO_COLUMN, require_video_support
from .checkpoints import CheckpointsMixin
from .collator import REF_COLUMNS, DataCollatorForVisionPreferenceWithRef, trainable_rows
from .image_features import ImageFeaturesOncePerPair
from .reference_logps import has_ref_log_probs, mixed_precision_dtype, precompute_ref_log_probs
from .rlaifv_dpo_config import RLAIFVDPOConfig


logger = get_logger(__name__)


def _is_vision_dataset(dataset: Dataset | IterableDataset) -> bool:
    """The test `trl.DPOTrainer` applies (the first row has an `image` or `images` column), or a `videos` column."""
    sample = next(iter(dataset))
    return "image" in sample or "images" in sample or VIDEO_COLUMN in sample


def _is_video_dataset(dataset: Dataset | IterableDataset | None) -> bool:
    return dataset is not None and VIDEO_COLUMN in (dataset.column_names or next(iter(dataset)))


def with_images_column(dataset: Dataset | IterableDataset) -> Dataset | IterableDataset:
    """A video dataset with an `images` column (empty lists) where it has none, so that `trl.DPOTrainer` treats it
    as a vision dataset (it looks for `image` / `images`)."""
    columns = dataset.column_names or list(next(iter(dataset)))
    if "images" in columns or "image" in columns:
        return dataset
    if isinstance(dataset, Dataset):
        return dataset.add_column("images", [[] for _ in range(len(dataset))], feature=List(Image()))
    return dataset.map(lambda row: {"images": []})


def _require_explicit_prompts(dataset: Dataset | IterableDataset | None) -> None:
    """Refuse a vision dataset without a `prompt` column (TRL's vision collator reads it; `trl.DPOTrainer` extracts
    implicit prompts for text datasets only and fails on the first batch of such a vision dataset)."""
    if dataset is None or not _is_vision_dataset(dataset):
        return
    columns = dataset.column_names or list(next(iter(dataset)))
    if "prompt" not in columns:
        raise ValueError(
            f"The vision dataset has no `prompt` column (columns: {columns}): its prompts are implicit, inside "
            "`chosen` and `rejected`, and TRL's vision collator needs them apart. Extract them first: "
            "`dataset = dataset.map(trl.extract_prompt)`."
        )


def _model_name(model) -> str | None:
    """The Hub id or folder a model (given by name or as a model) was loaded from, if known."""
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    config = getattr(model, "config", None)
    name = get_config_model_id(config) if config is not None else None
    return name or None


def _reference_name(model, ref_model, args, train_dataset, peft_config) -> str | None:
    """Which model the policy is trained against: `ref_model`, else the policy's starting weights (what
    `DPOTrainer` copies, or what the precompute runs); `None` when unknown (reference log-probs read from the
    dataset) or when the reference is a PEFT model's base (the scorer finds that one itself)."""
    if ref_model is not None:
        return _model_name(ref_model)
    if peft_config is not None or (not isinstance(model, (str, os.PathLike)) and is_peft_model(model)):
        return None
    if args.precompute_ref_log_probs and train_dataset is not None and has_ref_log_probs(train_dataset):
        return None
    return _model_name(model)


def _processor_of(model) -> Any:
    """The processor saved with a model given by name or path (what `trl.DPOTrainer` loads without one)."""
    from transformers import AutoProcessor

    name = model if isinstance(model, str) else get_config_model_id(model.config)
    return AutoProcessor.from_pretrained(name)


class _FusedForwardRecorder:
    """Keeps the per-token log-probabilities returned by the fused-LM-head forwards of `DPOTrainer._compute_loss`.

    `DPOTrainer` runs the policy, then (unless reference log-probs are precomputed) the reference, each as
    `model(..., fused_lm_head=True)`, whose output has `log_probs`; it keeps them in local variables. Forward hooks on
    the policy and reference modules record them, in call order, while `recording()` is active.
    """

    def __init__(self, modules: list[torch.nn.Module]):
        self._records: list[torch.Tensor] | None = None
        self._handles = [module.register_forward_hook(self._hook) for module in dict.fromkeys(modules)]

    def _hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        log_probs = getattr(output, "log_probs", None)
        if self._records is not None and log_probs is not None:
            self._records.append(log_probs.detach())

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[torch.Tensor]]:
        self._records = records = []
        try:
            yield records
        finally:
            self._records = None


class RLAIFVDPOTrainer(CheckpointsMixin, DPOTrainer):
    """
    Trainer for the DPO stage of RLAIF-V ([paper](https://huggingface.co/papers/2405.17220)): a [`~trl.DPOTrainer`] that
    takes the same arguments (the ones not listed in the signature, e.g. `processing_class` or `peft_config`, are passed
    on as keywords) and adds, for vision-language models:

    - `precompute_ref_log_probs=True` for vision datasets: the reference log-probabilities of every chosen and
      rejected answer are computed once before training (batched, shared across processes, with a progress bar) and
      stored as the dataset columns `ref_chosen_logps` / `ref_rejected_logps` (see [`precompute_ref_log_probs`]), so
      they can be saved and pushed with the data. When the dataset already has both columns, no reference forward
      pass runs and no reference model is loaded. Without a `ref_model`, the reference is the model as passed (for a
      PEFT model, its base with the adapter disabled, or its frozen "ref" adapter when re-training an adapter).
    - The length-normalized implicit reward of the chosen and rejected answers, logged on every batch (see
      [`RLAIFVDPOConfig.log_length_normalized_rewards`]).
    - Bad rows skipped before the reference log-probs or training read them, each with a code and the field, counted
      per cause in `row_validation_reports[name]` (logged, and saved as `row_validation/<name>.json` in
      `output_dir`). A row `max_length` would leave no answer token of is one of them. `row_validation` (a
      `RowValidation`) says where image paths may be read from and how large images may be; with
      `row_validation.strict` the first bad row raises `BadRowError` naming it.
    - `save_model` (and every checkpoint) also writes `implicit_reward.json`: this training's `beta`, `max_length`,
      `loss_type` and reference (a Hub id, or a local folder relative to the saved policy), which
      [`LengthNormalizedRewardScorer.from_pretrained`] reads, so that the policy is scored as it was trained.
    - Video prompts: a dataset with a `videos` column (one list of videos per row, each a list of frames) is encoded
      with the processor's video processor (TRL's vision collator drops videos), for processors that have one; the
      others are refused, naming the family. A dataset with only `videos` gets an empty `images` column.

    A custom `data_collator` used with precomputed reference log-probabilities must pass the two columns through.

    Example:

    ```python
    >>> from rlaifv_trl import RLAIFVDPOConfig, RLAIFVDPOTrainer

    >>> args = RLAIFVDPOConfig("llava-rlaifv", precompute_ref_log_probs=True)
    >>> trainer = RLAIFVDPOTrainer(model="llava-hf/llava-1.5-7b-hf", args=args, train_dataset=pairs)
    >>> trainer.train_dataset.push_to_hub("me/pairs-with-ref-logps")  # reuse them in another run
    >>> trainer.train()
    ```
    """

    _tag_names = ["trl", "dpo", "rlaif-v"]
    _name = "RLAIF-V DPO"
    _paper = {
        "title": "RLAIF-V: Open-Source AI Feedback Leads to Super GPT-4V Trustworthiness",
        "id": "2405.17220",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @inproceedings{yu2025rlaifv,
                title        = {{RLAIF-V: Open-Source AI Feedback Leads to Super GPT-4V Trustworthiness}},
                author       = {Tianyu Yu and others},
                year         = 2025,
                booktitle    = {IEEE/CVF Conference on Computer Vision and Pattern Recognition, CVPR 2025},
            }"""),
    }

    def __init__(
        self,
        model,
        ref_model=None,
        args: RLAIFVDPOConfig | None = None,
        data_collator=None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset=None,
        row_validation: RowValidation | None = None,
        **kwargs: Any,
    ):
        self.row_validation = row_validation or RowValidation()
        self.row_validation_reports: dict[str, ValidationReport] = {}
        self._checked_datasets: set[int] = set()
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = RLAIFVDPOConfig(f"{model_name.split('/')[-1]}-RLAIF-V")
        video_datasets = [train_dataset] + (
            list(eval_dataset.values()) if isinstance(eval_dataset, dict) else [eval_dataset]
        )
        for dataset in video_datasets:
            _require_explicit_prompts(dataset)
        if any(_is_video_dataset(dataset) for dataset in video_datasets):
            require_video_support(kwargs.get("processing_class") or _processor_of(model), "policy")
            train_dataset = with_images_column(train_dataset) if train_dataset is not None else None
            if isinstance(eval_dataset, dict):
                eval_dataset = {name: with_images_column(data) for name, data in eval_dataset.items()}
            elif eval_dataset is not None:
                eval_dataset = with_images_column(eval_dataset)
        self._vision_precompute = bool(
            args.precompute_ref_log_probs and train_dataset is not None and _is_vision_dataset(train_dataset)
        )
        if self._vision_precompute:
            self._check_vision_precompute(args, train_dataset, eval_dataset)
            # DPOTrainer refuses the flag for vision datasets at the start of its __init__; it is set again in
            # `create_accelerator_and_postprocess`, before DPOTrainer reads it to skip loading a reference model and
            # to call `_precompute_ref_logps`, which this class implements for vision datasets.
            args.precompute_ref_log_probs = False
        self._reference = _reference_name(model, ref_model, args, train_dataset, kwargs.get("peft_config"))
        try:
            super().__init__(model, ref_model, args, data_collator, train_dataset, eval_dataset, **kwargs)
        finally:
            args.precompute_ref_log_probs = args.precompute_ref_log_probs or self._vision_precompute
        if self._is_vision_dataset:  # the datasets precompute has not checked yet
            self.train_dataset = self._checked_rows(self.train_dataset, "train")
            if isinstance(self.eval_dataset, dict):
                self.eval_dataset = {name: self._checked_rows(data, name) for name, data in self.eval_dataset.items()}
            elif self.eval_dataset is not None:
                self.eval_dataset = self._checked_rows(self.eval_dataset, "eval")
        if self._vision_precompute:
            self.precompute_ref_logps = True
        elif self._is_vision_dataset and has_ref_log_probs(self.train_dataset):
            logger.warning(
                "The training dataset has `ref_chosen_logps` / `ref_rejected_logps` columns, but "
                "`precompute_ref_log_probs=False`: the reference model runs on every batch and the columns are "
                "ignored. Set `precompute_ref_log_probs=True` to use them."
            )
        if type(self.data_collator) is DataCollatorForVisionPreference:  # TRL's default: keep its settings
            collator = self.data_collator
            self.data_collator = DataCollatorForVisionPreferenceWithRef(
                processor=collator.processor,
                max_length=collator.max_length,
                pad_to_multiple_of=collator.pad_to_multiple_of,
                return_tensors=collator.return_tensors,
            )
        self.image_features_sharing = None
        if getattr(args, "encode_images_once", False):
            models = [self.accelerator.unwrap_model(self.model)]
            if self.ref_model is not None:
                models.append(self.accelerator.unwrap_model(self.ref_model))
            self.image_features_sharing = ImageFeaturesOncePerPair(*models)
        self._recorder = None
        if getattr(args, "log_length_normalized_rewards", True):  # also given a plain DPOConfig
            modules = [self.accelerator.unwrap_model(self.model)]
            if self.ref_model is not None:
                modules.append(self.accelerator.unwrap_model(self.ref_model))
            self._recorder = _FusedForwardRecorder(modules)

    def implicit_reward_config(self, output_dir: str | os.PathLike) -> ImplicitRewardConfig:
        """How the saved policy's implicit reward is computed (`implicit_reward.json`): this training's `beta`,
        `max_length` and `loss_type`, length-normalized, and its reference: a Hub id, or a local folder relative to
        `output_dir`."""
        config = ImplicitRewardConfig.from_dpo_config(self.args)
        if self._reference is not None and Path(self._reference).is_dir():
            config.reference_path = os.path.relpath(Path(self._reference).resolve(), Path(output_dir).resolve())
        elif self._reference is not None:
            config.reference_model = self._reference
        return config

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`, plus the policy's implicit-reward settings (`implicit_reward.json`), so that
        `LengthNormalizedRewardScorer.from_pretrained(output_dir)` scores with this training's beta and reference."""
        super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        if self.args.should_save:
            self.implicit_reward_config(output_dir).save(output_dir)
            logger.info(f"Implicit-reward settings saved in {Path(output_dir) / REWARD_CONFIG_NAME}")

    @staticmethod
    def _check_vision_precompute(args: RLAIFVDPOConfig, train_dataset, eval_dataset) -> None:
        datasets = [train_dataset] + (
            list(eval_dataset.values()) if isinstance(eval_dataset, dict) else [eval_dataset]
        )
        if any(isinstance(dataset, IterableDataset) for dataset in datasets):
            raise ValueError(
                "`precompute_ref_log_probs=True` needs map-style datasets: an `IterableDataset` cannot get new columns. "
                "Add them with `rlaifv_trl.precompute_ref_log_probs` before streaming, or set it to False."
            )
        if args.ld_alpha is not None:
            raise ValueError(
                "`ld_alpha` cannot be used with precomputed reference log-probs of vision datasets: LD-DPO weights the "
                "reference log-probs by the shared length of each pair, which per-answer columns do not carry. Set "
                "`precompute_ref_log_probs=False` or `ld_alpha=None`."
            )

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        if getattr(self, "_vision_precompute", False):
            self.args.precompute_ref_log_probs = True  # see __init__

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self._is_vision_dataset:  # TRL keeps only the columns its vision collator reads
            extra = [
                column for column in (*REF_COLUMNS, "prompt_id", VIDEO_COLUMN) if column not in self._signature_columns
            ]
            self._signature_columns = [*self._signature_columns, *extra]

    def _checked_rows(self, dataset: Dataset | IterableDataset, name: str) -> Dataset | IterableDataset:
        """The rows of a vision preference dataset that can be trained on; the others counted in a report."""
        if id(dataset) in self._checked_datasets:
            return dataset
        validation = self.row_validation
        checked, report = trainable_rows(
            dataset, self.processing_class, self.args.max_length, validation, validation.strict,
            f"RLAIFVDPOTrainer {name} dataset",
        )  # fmt: skip
        self.row_validation_reports[name] = report
        if isinstance(dataset, Dataset):
            self._save_report(name)
        self._checked_datasets.add(id(checked))
        return checked

    def _save_report(self, name: str) -> None:
        if self.args.should_save:
            self.row_validation_reports[name].save(Path(self.args.output_dir) / "row_validation" / f"{name}.json")

    def _finite_ref_rows(self, dataset: Dataset, name: str) -> Dataset:
        """The rows whose computed reference log-probs are finite; the others (e.g. a reference model overflowing in
        half precision) are skipped and counted like bad stored values (`row_validation.strict` raises)."""
        values = dataset.with_format("numpy", columns=list(REF_COLUMNS))[:]
        finite = np.isfinite(values[REF_COLUMNS[0]]) & np.isfinite(values[REF_COLUMNS[1]])
        if finite.all():
            return dataset
        report = self.row_validation_reports.setdefault(name, ValidationReport(f"RLAIFVDPOTrainer {name} dataset"))
        strict = self.row_validation.strict
        ids = dataset["prompt_id"] if "prompt_id" in dataset.column_names else [None] * len(dataset)
        for index in np.flatnonzero(~finite).tolist():
            column = REF_COLUMNS[0] if not np.isfinite(values[REF_COLUMNS[0]][index]) else REF_COLUMNS[1]
            message = f"the reference model gives {values[column][index]} (computed)"
            report.withdraw(index, ids[index], BadRow("ref_logps.non_finite", message, column), strict)
        report.log()
        self._save_report(name)
        if not finite.any():
            raise ValueError(f"No usable row in the RLAIFVDPOTrainer {name} dataset:\n{report.summary()}")
        return dataset.select(np.flatnonzero(finite).tolist())

    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        if not self._is_vision_dataset:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        dataset = self._checked_rows(dataset, name)
        if has_ref_log_probs(dataset):
            return dataset
        if self.ref_model is None and not is_peft_model(self.model) and self.state.global_step > 0:
            raise ValueError(
                f"The {name} dataset has no reference log-probs and they cannot be computed now: training has "
                "started, so the model is no longer the reference, and no reference model is kept. Add the columns "
                "with `precompute_ref_log_probs` before training, or pass this dataset as `eval_dataset` at "
                "initialization."
            )
        dataset = precompute_ref_log_probs(
            self.ref_model if self.ref_model is not None else self.model,
            self.processing_class,
            dataset,
            batch_size=batch_size,
            max_length=self.args.max_length,
            num_workers=self.args.dataloader_num_workers,
            desc=f"Computing reference log probs for {name} dataset",
            autocast_dtype=mixed_precision_dtype(self.args),
        )
        dataset = self._finite_ref_rows(dataset, name)
        self._checked_datasets.add(id(dataset))  # checked above: not again after `__init__`
        return dataset

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        # DPOTrainer prepares a dataset passed here only for text data; vision data needs its reference columns.
        if self._vision_precompute and eval_dataset is not None and not isinstance(eval_dataset, str):
            batch_size = self.args.precompute_ref_batch_size or self.args.per_device_eval_batch_size
            if isinstance(eval_dataset, dict):
                eval_dataset = {
                    name: self._precompute_ref_logps(dataset, name, batch_size)
                    for name, dataset in eval_dataset.items()
                }
            else:
                eval_dataset = self._precompute_ref_logps(eval_dataset, "eval", batch_size)
        return super().evaluate(
            eval_dataset=eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
        )

    def _compute_loss(self, model, inputs, return_outputs):
        sharing = self.image_features_sharing.active() if self.image_features_sharing else contextlib.nullcontext()
        with sharing:
            if self._recorder is None:
                return super()._compute_loss(model, inputs, return_outputs)
            with self._recorder.recording() as records:
                result = super()._compute_loss(model, inputs, return_outputs)
        self._log_length_normalized_rewards(inputs, records)
        return result

    def _log_length_normalized_rewards(self, inputs: dict[str, Any], records: list[torch.Tensor]) -> None:
        """Append the length-normalized implicit rewards and answer lengths of the batch to `self._metrics`."""
        expected = 1 if self.precompute_ref_logps else 2
        if len(records) != expected:
            raise RuntimeError(
                f"DPOTrainer._compute_loss ran {len(records)} forward passes with `fused_lm_head=True`, expected "
                f"{expected} (policy{'' if expected == 1 else ', then reference'}): the installed TRL changed how it "
                "computes log-probs. Set `log_length_normalized_rewards=False` or use the TRL version this package "
                "supports."
            )
        answer_mask = inputs["completion_mask"][:, 1:]
        seq_len = answer_mask.size(1)
        policy_logps = records[0][:, -seq_len:].sum(dim=1)
        if self.precompute_ref_logps:
            ref_logps = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]])
        else:
            ref_logps = records[1][:, -seq_len:].sum(dim=1)
        lengths = answer_mask.sum(dim=1)
        rewards = length_normalized_reward(policy_logps, ref_logps.to(policy_logps), lengths.clamp(min=1), self.beta)
        chosen, rejected = rewards.chunk(2)
        chosen_length, rejected_length = lengths.to(rewards).chunk(2)
        gathered = self.accelerator.gather(torch.stack([chosen, rejected, chosen_length, rejected_length], dim=1))
        chosen, rejected, chosen_length, rejected_length = gathered.unbind(dim=1)
        metrics = self._metrics["train" if self.model.training else "eval"]
        metrics["length_normalized_rewards/chosen"].append(chosen.mean().item())
        metrics["length_normalized_rewards/rejected"].append(rejected.mean().item())
        metrics["length_normalized_rewards/margins"].append((chosen - rejected).mean().item())
        metrics["length_normalized_rewards/accuracies"].append((chosen > rejected).float().mean().item())
        metrics["answer_length/chosen"].append(chosen_length.mean().item())
        metrics["answer_length/rejected"].append(rejected_length.mean().item())
