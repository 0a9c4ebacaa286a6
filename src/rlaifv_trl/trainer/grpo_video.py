"""Video prompts for TRL's `GRPOTrainer`: a mixin that encodes, generates from and scores prompts with videos.

TRL's `GRPOTrainer` reads images only. With `VideoPromptsMixin` before it in the bases, a dataset with a `videos`
column (one list of videos per row, each a list of frames; `rlaifv_trl.video`) and `{"type": "video"}` placeholders
in its conversational prompts trains as an image dataset does:

- `_tokenize_prompts` encodes a batch's prompts with their videos (`processor_inputs`): the prompt ids with the video
  tokens expanded, and `pixel_values_videos` / `video_grid_thw` / `mm_token_type_ids` for generation;
- the batch dict keeps `pixel_values_videos` and `video_grid_thw` as per-sample lists (so TRL's shuffle and split keep
  them with their rows) and `mm_token_type_ids` over prompt and completion (completion tokens are text);
- every forward pass (old, reference and policy log-probs, the loss) gets each chunk's video tensors and token types.

Batches without videos go through TRL's code untouched. A batch row with both images and videos, a family without a
video processor, vLLM generation, tools, environments and `rollout_func` are refused with a clear error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from datasets import Dataset

from ..validation import BadRow, BadRowError, conversational_prompt, row_videos
from ..video import VIDEO_COLUMN, Video, processor_inputs, require_video_support


VIDEO_FIELDS = ("pixel_values_videos", "video_grid_thw")


def split_video_inputs(encoded: dict[str, torch.Tensor], videos_per_row: list[int]) -> dict[str, list[torch.Tensor]]:
    """A processor's batched video tensors as one tensor per row (`videos_per_row[i]` videos in row i)."""
    grid = encoded["video_grid_thw"]
    rows_per_video = grid.prod(dim=-1).tolist()
    bounds = [0]
    for count in videos_per_row:
        bounds.append(bounds[-1] + count)
    sections = [sum(rows_per_video[bounds[i] : bounds[i + 1]]) for i in range(len(videos_per_row))]
    return {
        "pixel_values_videos": list(torch.split(encoded["pixel_values_videos"], sections)),
        "video_grid_thw": list(torch.split(grid, videos_per_row)),
    }


class VideoPromptsMixin:
    """Adds video prompts to a `trl.GRPOTrainer` subclass (put it first in the bases; see the module docstring)."""

    _prompt_videos: list[list[Video]] | None = None
    _forward_videos: dict[str, list[torch.Tensor]] | None = None

    def _check_video_support(self) -> None:
        """Refuse, before training, a video dataset the trainer cannot run."""
        eval_dataset = getattr(self, "eval_dataset", None)
        datasets = [self.train_dataset, *(eval_dataset.values() if isinstance(eval_dataset, dict) else [eval_dataset])]
        if not any(isinstance(d, Dataset) and VIDEO_COLUMN in d.column_names for d in datasets):
            return
        require_video_support(self.processing_class, "policy")
        unsupported = [
            name
            for name, used in (
                ("use_vllm", self.use_vllm),
                ("tools", bool(self.tools)),
                ("environment_factory", self.environment_factories is not None),
                ("rollout_func", self.rollout_func is not None),
            )
            if used
        ]
        if unsupported:
            raise ValueError(
                f"Video prompts are generated with transformers' `generate` only: {', '.join(unsupported)} cannot be "
                "used with a dataset that has a `videos` column."
            )

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if VIDEO_COLUMN not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, VIDEO_COLUMN]

    @staticmethod
    def batch_videos(inputs: list[dict[str, Any]]) -> list[list[Video]] | None:
        """Each batch row's videos as lists of PIL frames, or `None` when no row has a video. A bad row raises
        `BadRowError` naming its position in the batch, its `prompt_id` and the field."""
        if not any(row.get(VIDEO_COLUMN) for row in inputs):
            return None
        videos = []
        for index, row in enumerate(inputs):
            try:
                if row.get("images") or row.get("image") is not None:
                    raise BadRow("prompt.malformed", "a row with both images and videos", "images")
                row_video_list = row_videos(row.get(VIDEO_COLUMN), VIDEO_COLUMN)
                conversational_prompt(row["prompt"], 0, "prompt", len(row_video_list))
            except BadRow as problem:
                raise BadRowError("GRPO video batch", index, row.get("prompt_id"), problem) from None
            videos.append(row_video_list)
        return videos

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._prompt_videos = self.batch_videos(inputs)
        try:
            output = super()._generate_and_score_completions(inputs)
            if self._forward_videos is not None:
                output.update(self._forward_videos)
                if self._uses_token_types():
                    output["mm_token_type_ids"] = self.video_token_types(
                        torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1),
                        output["completion_ids"].size(1),
                    )
        finally:
            self._prompt_videos = self._forward_videos = None
        return output

    def _tokenize_prompts(self, prompts: list):
        if self._prompt_videos is None:
            return super()._tokenize_prompts(prompts)
        texts = self.processing_class.apply_chat_template(
            prompts, chat_template=self.chat_template, add_generation_prompt=True, tokenize=False,
            **self.chat_template_kwargs,
        )  # fmt: skip
        encoded = processor_inputs(
            self.processing_class, texts, None, self._prompt_videos, padding=True, padding_side="left",
            return_tensors="pt", add_special_tokens=False,
        )  # fmt: skip
        keep = encoded["attention_mask"].bool()
        prompt_ids = [ids[mask].tolist() for ids, mask in zip(encoded["input_ids"], keep)]
        device = self.accelerator.device
        per_row = split_video_inputs(encoded, [len(videos) for videos in self._prompt_videos])
        self._forward_videos = {name: [t.to(device) for t in tensors] for name, tensors in per_row.items()}
        fields = {name: encoded[name] for name in VIDEO_FIELDS}
        if "mm_token_type_ids" in encoded:
            fields["mm_token_type_ids"] = [t[mask].tolist() for t, mask in zip(encoded["mm_token_type_ids"], keep)]
        return prompt_ids, None, fields

    def _uses_token_types(self) -> bool:
        return "mm_token_type_ids" in getattr(self.processing_class, "model_input_names", ())

    def video_token_types(self, input_ids: torch.Tensor, completion_length: int) -> torch.Tensor:
        """`mm_token_type_ids` of prompt + completion sequences: the processor's for the prompt, text (0) after it."""
        types = torch.zeros_like(input_ids)
        prompt = input_ids[:, : input_ids.size(1) - completion_length]
        prompt_types = self.processing_class.create_mm_token_type_ids(prompt.cpu())
        types[:, : prompt.size(1)] = torch.as_tensor(prompt_types, device=input_ids.device)
        return types

    @contextmanager
    def video_forwards(self, inputs: dict[str, Any]) -> Iterator[None]:
        """Within the block, forward passes get the per-sample video tensors of `inputs` (when it has some)."""
        previous = self._forward_videos
        if VIDEO_FIELDS[0] in inputs:
            self._forward_videos = {name: inputs[name] for name in VIDEO_FIELDS}
        try:
            yield
        finally:
            self._forward_videos = previous

    def _compute_loss(self, model, inputs):
        with self.video_forwards(inputs):
            return super()._compute_loss(model, inputs)

    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False,
        compute_aux_loss=False, **kwargs,
    ):  # fmt: skip
        videos = self._forward_videos
        if videos is None:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss,
                **kwargs,
            )  # fmt: skip
        # TRL's passes during generation do not know the videos: their token types come from the ids.
        types = kwargs.pop("mm_token_type_ids", None)
        if types is None and self._uses_token_types():
            types = self.video_token_types(input_ids, logits_to_keep)
        batch_size = batch_size or input_ids.size(0)
        logps, entropies, aux_losses = [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            end = min(start + batch_size, input_ids.size(0))
            chunk_videos = {name: torch.cat(videos[name][start:end]) for name in VIDEO_FIELDS}

            def add_videos(module, args, forward_kwargs, chunk_videos=chunk_videos):
                return args, {**forward_kwargs, **chunk_videos}

            handle = model.register_forward_pre_hook(add_videos, with_kwargs=True)
            try:
                chunk = super()._get_per_token_logps_and_entropies(
                    model, input_ids[start:end], attention_mask[start:end], logits_to_keep, end - start,
                    compute_entropy, compute_aux_loss,
                    mm_token_type_ids=None if types is None else types[start:end], **kwargs,
                )  # fmt: skip
            finally:
                handle.remove()
            logps.append(chunk[0])
            entropies.append(chunk[1])
            aux_losses.append(chunk[2])
        return (
            torch.cat(logps),
            torch.cat(entropies) if compute_entropy else None,
            torch.stack(aux_losses).mean() if compute_aux_loss else None,
        )
