"""InternVL (2.5 / 3, the transformers-native "-hf" checkpoints): an InternViT vision tower, a pixel-shuffle MLP
projector and a Qwen2 language model; images are cut into tiles of the tower's size (dynamic tiling) plus a
thumbnail, and each tile becomes `<img><IMG_CONTEXT>...</img>` in the text."""

from __future__ import annotations

import torch
from transformers import (
    GotOcr2ImageProcessor,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    InternVLVideoProcessor,
    InternVLVisionConfig,
    Qwen2Config,
)

from ..models import TinyVLMPreset, _llama_text_config
from ..tokenizer import family_tokenizer
from . import Family


# The chat template of OpenGVLab/InternVL3-*-hf, as written by transformers'
# `models/internvl/convert_internvl_weights_to_hf.py` (ChatML; each image is `<IMG_CONTEXT>\n`, which the processor
# expands into `<img>` + image_seq_length * num_tiles `<IMG_CONTEXT>` + `</img>`).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}"
    "{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}"
    "{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{'<|im_end|>\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{'<|im_start|>assistant\n' }}"
    "{% endif %}"
)
# The tokens the conversion script adds to the Qwen2.5 tokenizer, and those the processor reads by name.
SPECIAL_TOKENS = ["<|im_start|>", "<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>"]
SPECIAL_TOKENS += ["</box>", "<video>"]
NAMED_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
DOWNSAMPLE_RATIO = 0.5  # pixel shuffle: 2x2 neighbouring patches become one token


def build(spec: TinyVLMPreset, seed: int):
    """A tile of `spec.image_size` (patch `spec.patch_size`) gives (side / patch)^2 / 4 tokens after the pixel
    shuffle; dynamic tiling cuts ShapesWorld's 48x48 scenes into a 2x2 grid of tiles plus a thumbnail."""
    tokenizer = family_tokenizer(CHAT_TEMPLATE, SPECIAL_TOKENS, NAMED_TOKENS, eos_token="<|im_end|>")
    image_seq_length = int((spec.image_size // spec.patch_size) ** 2 * DOWNSAMPLE_RATIO**2)
    config = InternVLConfig(
        vision_config=InternVLVisionConfig(
            hidden_size=spec.vision_hidden,
            intermediate_size=spec.vision_intermediate,
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=spec.vision_heads,
            image_size=spec.image_size,
            patch_size=spec.patch_size,
        ),
        text_config=_llama_text_config(spec, tokenizer, config_class=Qwen2Config),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=image_seq_length,
        downsample_ratio=DOWNSAMPLE_RATIO,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config)
    size = {"height": spec.image_size, "width": spec.image_size}
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=True, min_patches=1, max_patches=12),
        video_processor=InternVLVideoProcessor(size=size),
        tokenizer=tokenizer,
        image_seq_length=image_seq_length,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


FAMILY = Family(
    name="internvl",
    display="InternVL",
    examples="OpenGVLab/InternVL3-1B-hf, OpenGVLab/InternVL3-8B-hf, OpenGVLab/InternVL2_5-8B-MPO-hf",
    build=build,
    needs_torchvision=True,
    notes="dynamic tiling: 48x48 scenes become a 2x2 grid of 32x32 tiles plus a thumbnail; pixel-shuffle projector",
)
