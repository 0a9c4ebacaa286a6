"""Qwen3-VL: a SigLIP-2-style vision tower with learned, interpolated position embeddings and DeepStack (features of
intermediate vision layers added to the first language-model layers), interleaved 3-D multimodal rotary positions
(M-RoPE) and a Qwen3 language model (q/k RMS norms)."""

from __future__ import annotations

import torch

from ..models import _mrope_text_config, _qwen_vision_token_ids
from ..tokenizer import family_chat_template, family_tokenizer
from . import Family


# The added tokens of Qwen3-VL's tokenizer (`Qwen/Qwen3-VL-2B-Instruct`) but the fill-in-the-middle ones: chat turns,
# grounding and vision markup, and the tool / reasoning tags its chat template and outputs use.
SPECIAL_TOKENS = (
    "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
    "<|video_pad|>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>",
)  # fmt: skip
# Tokenizer attributes `Qwen3VLProcessor` reads.
NAMED_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
}
# Qwen3-VL normalises pixels to [-1, 1] (its preprocessor_config.json), not with CLIP's statistics.
IMAGE_MEAN = IMAGE_STD = [0.5, 0.5, 0.5]


def qwen3_tokenizer(template: str):
    """The tokenizer of the Qwen3-VL / Qwen3.5 families: eos `<|im_end|>` (end of turn), pad `<|endoftext|>`."""
    return family_tokenizer(template, SPECIAL_TOKENS, NAMED_TOKENS, eos_token="<|im_end|>")


def interleaved_mrope_text_config(spec, tokenizer) -> dict:
    """The text config of the Qwen3-VL family: explicit head size and interleaved M-RoPE.

    Qwen3-VL interleaves the (time, height, width) frequencies (t h w t h w ... t t) instead of splitting the rotary
    half-dimension into three blocks; its sections are [24, 20, 20] of 64. The tiny preset's half-dimension is 8:
    [4, 2, 2] keeps the same shape (height and width each take every third frequency from 1 and 2, time the rest).
    """
    head_dim = spec.text_hidden // spec.text_heads
    half = head_dim // 2
    spatial = max(1, half // 4)
    section = [half - 2 * spatial, spatial, spatial]
    config = _mrope_text_config(spec, tokenizer)
    config.update(
        head_dim=head_dim,
        rope_parameters={
            "rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": section, "mrope_interleaved": True,
        },
    )  # fmt: skip
    return config


def qwen3_vision_config(spec, **extra) -> dict:
    """The vision tower of the Qwen3-VL family: 2x2 patch merging, 2-frame temporal patches, a 4x4 grid of learned
    position embeddings (bilinearly interpolated to each image's grid)."""
    return {
        "depth": spec.vision_layers,
        "hidden_size": spec.vision_hidden,
        "intermediate_size": spec.vision_intermediate,
        "num_heads": spec.vision_heads,
        "out_hidden_size": spec.text_hidden,
        "patch_size": spec.patch_size,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 16,
        **extra,
    }


def qwen3_processor(spec, tokenizer):
    """`Qwen3VLProcessor` with its real image processor (`Qwen2VLImageProcessor`) and video processor
    (`Qwen3VLVideoProcessor`), at the preset's patch size: images keep their own size up to twice the preset's side
    (dynamic resolution), smaller ones are upscaled to it."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    side = spec.image_size
    common = {"patch_size": spec.patch_size, "temporal_patch_size": 2, "merge_size": 2}
    common.update(image_mean=IMAGE_MEAN, image_std=IMAGE_STD)
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": side * side, "longest_edge": 4 * side * side}, **common
    )
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": side * side, "longest_edge": 16 * side * side}, cap_pixels_per_frame=True, **common
    )
    return Qwen3VLProcessor(
        image_processor=image_processor,
        video_processor=video_processor,
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )


def build(spec, seed: int):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    tokenizer = qwen3_tokenizer(family_chat_template("qwen3_vl"))
    config = Qwen3VLConfig(
        text_config=interleaved_mrope_text_config(spec, tokenizer),
        # DeepStack: the output of vision layer 0 (merged) is added to the hidden states of the first language layer.
        vision_config=qwen3_vision_config(spec, deepstack_visual_indexes=[0]),
        tie_word_embeddings=False,
        **_qwen_vision_token_ids(tokenizer),
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    return model, qwen3_processor(spec, tokenizer)


FAMILY = Family(
    name="qwen3_vl",
    display="Qwen3-VL",
    examples="Qwen/Qwen3-VL-2B-Instruct, Qwen/Qwen3-VL-8B-Instruct",
    build=build,
    needs_torchvision=True,
    notes="interleaved 3-D rotary positions continue after the image; DeepStack vision features",
)
