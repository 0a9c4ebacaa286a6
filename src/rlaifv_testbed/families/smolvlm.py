"""SmolVLM: Idefics3's design (image splitting, pixel-shuffle connector) on a SmolLM2 language model, with the
SmolLM2 chat markup and a video processor beside the image processor."""

import torch
from transformers import (
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMImageProcessorPil,
    SmolVLMProcessor,
    SmolVLMVideoProcessor,
    SmolVLMVisionConfig,
)

from ..models import TinyVLMPreset
from ..tokenizer import family_chat_template, family_tokenizer
from . import Family
from .idefics3 import image_seq_len, splitting_config, tile_markup, tiling_sizes


# The tokenizer attributes SmolVLMProcessor reads (it falls back to these very strings).
NAMED_TOKENS = {
    "image_token": "<image>",
    "fake_image_token": "<fake_token_around_image>",
    "global_image_token": "<global-img>",
    "end_of_utterance_token": "<end_of_utterance>",
}


def build(spec: TinyVLMPreset, seed: int):
    tokenizer = family_tokenizer(
        family_chat_template("smolvlm"),
        special_tokens=tile_markup(),
        named_tokens=NAMED_TOKENS,
        eos_token="<end_of_utterance>",
        bos_token="<|im_start|>",
    )
    torch.manual_seed(seed)
    model = SmolVLMForConditionalGeneration(splitting_config(SmolVLMConfig, SmolVLMVisionConfig, spec, tokenizer))
    sizes = tiling_sizes(spec)
    video_sampling = {"fps": 1, "max_frames": 4, "video_size": {"longest_edge": spec.image_size}}
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessorPil(do_image_splitting=True, **sizes),
        video_processor=SmolVLMVideoProcessor(video_sampling=video_sampling, **sizes),
        tokenizer=tokenizer,
        image_seq_len=image_seq_len(spec),
        chat_template=tokenizer.chat_template,
    )
    return model, processor


FAMILY = Family(
    name="smolvlm",
    display="SmolVLM",
    examples="HuggingFaceTB/SmolVLM-256M-Instruct, HuggingFaceTB/SmolVLM2-2.2B-Instruct",
    build=build,
    needs_torchvision=True,
    notes="image splitting as Idefics3; its processor needs num2words (and torchvision, for its video processor)",
)
