"""LLaVA-OneVision: a SigLIP vision tower, an MLP projector and a Qwen2 language model, with LLaVA-NeXT's
any-resolution tiling (a base view plus crops on a grid of up to 6x6 tiles, unpadded, a learned newline embedding after
each row) capped at about 9 tiles' worth of features ("anyres_max_9")."""

from __future__ import annotations

import torch
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
    Qwen2Config,
    SiglipVisionConfig,
)

from ..models import TinyVLMPreset, _llama_text_config
from ..tokenizer import family_tokenizer
from . import Family


# The chat template of llava-hf/llava-onevision-qwen2-*-ov-hf, as written by transformers'
# `models/llava_onevision/convert_llava_onevision_weights_to_hf.py` (ChatML; the images of a turn first, each as
# `<image>\n`, then its videos, then its text; answers inside `{% generation %}`), with one addition: the real
# template only reads list content (a string content renders as an empty turn), so a string content is rendered as
# is, as TRL's string-content messages need.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}"  # added: string content
    "{% if message['role'] != 'assistant' %}{{ message['content'] }}"
    "{% else %}{% generation %}{{ message['content'] }}{% endgeneration %}{% endif %}"
    "{% else %}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all video then #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}"
    "{# Render all text next #}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] }}{% endgeneration %}"
    "{% endfor %}"
    "{% endif %}"
    "{% endif %}"
    "{{'<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|im_start|>", "<image>", "<video>"]
NAMED_TOKENS = {"image_token": "<image>", "video_token": "<video>"}
VISION_ASPECT_RATIO = "anyres_max_9"
SIGLIP_MEAN_STD = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


def build(spec: TinyVLMPreset, seed: int):
    """The real grid of tiles (1 to 6 tiles of `spec.image_size` a side), scaled down: ShapesWorld's 48x48 scenes go
    to a 2x2 grid, i.e. a base view of (side / patch)^2 tokens plus 4 crops' features unpadded into an 8x8 map with a
    newline embedding after each of its rows."""
    tokenizer = family_tokenizer(CHAT_TEMPLATE, SPECIAL_TOKENS, NAMED_TOKENS, eos_token="<|im_end|>")
    size = spec.image_size
    pinpoints = [[i * size, j * size] for i in range(1, 7) for j in range(1, 7)]
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=spec.vision_hidden,
            intermediate_size=spec.vision_intermediate,
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=spec.vision_heads,
            image_size=size,
            patch_size=spec.patch_size,
            vision_use_head=False,
        ),
        text_config=_llama_text_config(spec, tokenizer, config_class=Qwen2Config),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio=VISION_ASPECT_RATIO,
        image_grid_pinpoints=pinpoints,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config)
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(
            size={"height": size, "width": size}, image_grid_pinpoints=pinpoints, **SIGLIP_MEAN_STD
        ),
        video_processor=LlavaOnevisionVideoProcessor(size={"height": size, "width": size}, **SIGLIP_MEAN_STD),
        tokenizer=tokenizer,
        num_image_tokens=(size // spec.patch_size) ** 2,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
        vision_aspect_ratio=VISION_ASPECT_RATIO,
    )
    return model, processor


FAMILY = Family(
    name="llava_onevision",
    display="LLaVA-OneVision",
    examples="llava-hf/llava-onevision-qwen2-0.5b-ov-hf, llava-hf/llava-onevision-qwen2-7b-ov-hf",
    build=build,
    needs_torchvision=True,
    notes="any-resolution tiling capped at 9 tiles (anyres_max_9): 48x48 scenes become a base view and four crops",
)
