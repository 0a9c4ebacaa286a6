"""TRL's vision preference collator, carrying the reference log-probabilities and refusing answers cut away."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from datasets import Dataset, IterableDataset
from transformers import ProcessorMixin
from trl.trainer.dpo_trainer import DataCollatorForVisionPreference
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from ..validation import (
    REF_LOG_PROB_COLUMNS,
    BadRow,
    RowValidation,
    ValidationReport,
    check_preference_row,
    row_images,
    row_videos,
    validate_dataset,
)
from ..video import VIDEO_COLUMN, require_video_support, supports_video


REF_COLUMNS = REF_LOG_PROB_COLUMNS
# Set by `precompute_ref_log_probs` on each example so that errors can name the dataset row.
ROW_INDEX_KEY = "row_index"


def row_label(example: dict[str, Any]) -> str:
    """How an error message names a dataset row: its index when known, else its `prompt_id`, else its prompt."""
    if example.get(ROW_INDEX_KEY) is not None:
        return f"row {example[ROW_INDEX_KEY]}"
    if example.get("prompt_id") is not None:
        return f"the row with prompt_id={example['prompt_id']!r}"
    prompt = example.get("prompt")
    if isinstance(prompt, list):  # conversational: the text parts of the messages
        prompt = " ".join(
            part.get("text") or ""
            for message in prompt
            for part in (
                message["content"] if isinstance(message["content"], list) else [{"text": message["content"]}]
            )
        )
    return f"the row with prompt {str(prompt)[:80]!r}"


def check_answers_fit_row(
    row: dict[str, Any], collator: DataCollatorForVisionPreference, validation: RowValidation
) -> None:
    """Raise `BadRow` when `max_length` leaves no token of the row's chosen or rejected answer (TRL's collator
    would train on it with nothing), or when the processor cannot encode the row at all."""
    column = "images" if "images" in row else "image"
    example = {key: value for key, value in row.items() if key not in ("images", "image", VIDEO_COLUMN)}
    videos = row.get(VIDEO_COLUMN) or []
    text_only = row.get(column) == [] or (videos and not row.get(column))
    example["images"] = [] if text_only else row_images(row.get(column), column, validation)
    if videos:
        if not supports_video(collator.processor):
            raise BadRow("video.unsupported", f"{type(collator.processor).__name__} takes no videos", VIDEO_COLUMN)
        example[VIDEO_COLUMN] = row_videos(videos, VIDEO_COLUMN, validation)
    try:
        counts = collate_with_videos(collator, [example])["completion_mask"].sum(dim=1).tolist()
    except Exception as error:  # the processor's own checks (image tokens, sizes, ...)
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        raise BadRow("row.unprocessable", f"the processor cannot encode the row ({reason})") from None
    for side, count in zip(("chosen", "rejected"), counts):
        if count == 0:
            raise BadRow("answer.cut_by_max_length", f"max_length={collator.max_length} leaves no answer token", side)


def trainable_rows(
    dataset: Dataset | IterableDataset,
    processor: ProcessorMixin,
    max_length: int | None,
    validation: RowValidation,
    strict: bool = False,
    what: str = "preference dataset",
) -> tuple[Dataset | IterableDataset, ValidationReport]:
    """The rows of a vision preference dataset that DPO can train on, and the report of the others: each row's
    images, prompt and answers checked (`check_preference_row`, special tokens with the processor's tokenizer, any
    row format `trl.DPOTrainer` trains on), and with `max_length`, whether truncation leaves a token of each answer
    (the processor run as TRL's collator runs it; also without `max_length` for TRL's standard format, whose prompt
    text only the processor can check). Images given by path get their bytes. With `strict`, the first bad row
    raises `BadRowError`."""
    report = ValidationReport(what)
    tokenizer = getattr(processor, "tokenizer", processor)
    collator = DataCollatorForVisionPreference(processor=processor, max_length=max_length)

    def check(row: dict[str, Any]) -> None:
        check_preference_row(row, validation, tokenizer, raw_string_prompts=True)
        if max_length is not None or isinstance(row.get("prompt"), str):
            check_answers_fit_row(row, collator, validation)

    row_id = lambda row, index: row.get("prompt_id")  # noqa: E731
    checked = validate_dataset(dataset, check, report, strict, row_id, images=validation)
    if isinstance(dataset, Dataset):
        report.log()
        if len(checked) == 0:
            raise ValueError(f"No usable row in the {what}:\n{report.summary()}")
    return checked, report


def check_answers_fit(completion_mask: torch.Tensor, labels: list[str], max_length: int | None) -> None:
    """Raise if truncation to `max_length` removed every token of a chosen or rejected answer.

    TRL's vision collator cuts sequences at `max_length` after the prompt, image tokens included; a row whose prompt
    fills `max_length` keeps no answer token and would silently contribute nothing to the loss.
    """
    counts = completion_mask.sum(dim=1).tolist()
    half = len(counts) // 2
    for kind, offset in (("chosen", 0), ("rejected", half)):
        for row, label in enumerate(labels):
            if counts[offset + row] == 0:
                raise ValueError(
                    f"max_length={max_length} leaves no token of the {kind} answer of {label}: its prompt (image "
                    "tokens included) fills the whole sequence. Raise `max_length`, shorten the prompt or remove the row."
                )


class _PromptVideos:
    """The processor, with the batch's videos added to the call that encodes the prompts (the one given `images`).

    TRL's vision collator encodes the prompts (with their images) in one processor call and the answers (text only)
    in two more; everything else (chat template, attribute reads) goes to the processor itself.
    """

    def __init__(self, processor: ProcessorMixin, videos: list[list[Any]]):
        self._processor, self._videos = processor, videos

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if "images" in kwargs:
            kwargs["videos"] = self._videos
        return self._processor(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._processor, name)


def collate_with_videos(
    collator: DataCollatorForVisionPreference | DataCollatorForVisionLanguageModeling,
    examples: list[dict[str, Any]],
    base: type = DataCollatorForVisionPreference,
    copies: int = 2,
) -> dict[str, Any]:
    """TRL's vision collation of `examples` by the `base` collator class, with the videos of examples that have a
    `videos` key encoded along with their prompts (TRL's collators alone drop them). `copies` is how many times the
    prompts are encoded in the processor call (2 for preferences: chosen, then rejected; 1 for SFT)."""
    # Frames as PIL images (a dataset whose features were inferred may hold them as {"bytes", "path"} structs).
    videos = [video for example in examples for video in row_videos(example.pop(VIDEO_COLUMN, None), VIDEO_COLUMN)]
    if not videos:
        return base.torch_call(collator, examples)
    require_video_support(collator.processor)
    for example in examples:
        if "image" not in example:
            example["images"] = example.get("images") or []
    with_videos = replace(collator, processor=_PromptVideos(collator.processor, videos * copies))
    return base.torch_call(with_videos, examples)


@dataclass
class DataCollatorForVisionLanguageModelingWithVideos(DataCollatorForVisionLanguageModeling):
    """[`~trl.trainer.sft_trainer.DataCollatorForVisionLanguageModeling`] that encodes the `videos` of examples (a
    list of videos, each a list of frames, matching the prompt's `{"type": "video"}` placeholders) with their prompts,
    as TRL's collator encodes images. `SFTTrainer` needs `remove_unused_columns=False` to pass the `videos` column."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_with_videos(self, examples, base=DataCollatorForVisionLanguageModeling, copies=1)


@dataclass
class DataCollatorForVisionPreferenceWithRef(DataCollatorForVisionPreference):
    """[`~trl.trainer.dpo_trainer.DataCollatorForVisionPreference`] that keeps `ref_chosen_logps` / `ref_rejected_logps`
    and encodes videos.

    The batch gets the two columns as float32 tensors of shape `(batch,)` when the examples have them (TRL's vision
    collator drops them), and a `ValueError` naming the row is raised when `max_length` cuts a whole answer away.
    Examples with a `videos` key (a list of videos, each a list of frames, matching the prompt's `{"type": "video"}`
    placeholders) are encoded with them, as TRL's collator encodes images: the batch gets the processor's video
    inputs (e.g. `pixel_values_videos` and `video_grid_thw`), once for the chosen and once for the rejected rows.
    """

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        labels = [row_label(example) for example in examples]
        ref = {key: [example[key] for example in examples] for key in REF_COLUMNS if key in examples[0]}
        output = collate_with_videos(self, examples)
        check_answers_fit(output["completion_mask"], labels, self.max_length)
        for key, values in ref.items():
            output[key] = torch.tensor(values, dtype=torch.float32)
        return output
