"""Gemma 3: a SigLIP vision tower whose patches are average-pooled to a fixed number of soft tokens, and a Gemma 3
language model (interleaved sliding-window and global attention layers, bidirectional attention over each image's
tokens, tied embeddings)."""

import torch
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    Gemma3TextConfig,
    SiglipVisionConfig,
)

from ..models import TinyVLMPreset
from ..tokenizer import family_chat_template, family_tokenizer
from . import Family


# The tokenizer attributes Gemma3Processor reads: the chat template's placeholder (`boi_token`) is expanded into
# `\n\n<start_of_image>` + `image_token` x mm_tokens_per_image + `<end_of_image>\n\n`.
NAMED_TOKENS = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}
TOKENS_PER_SIDE = 2  # the pooled grid: mm_tokens_per_image = 4 (the real checkpoints: 16 x 16 = 256)


def build(spec: TinyVLMPreset, seed: int):
    tokenizer = family_tokenizer(
        family_chat_template("gemma3"),
        special_tokens=["<start_of_turn>", "<end_of_turn>"],
        named_tokens=NAMED_TOKENS,
        eos_token="<end_of_turn>",
        bos_token="<bos>",
    )
    ids = tokenizer.convert_tokens_to_ids
    head_dim = spec.text_hidden // spec.text_heads
    text_config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_intermediate,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads,
        head_dim=head_dim,
        query_pre_attn_scalar=head_dim,
        # Both kinds of layer (the real checkpoints: five sliding-window layers of 1024 tokens to one global layer);
        # the window is longer than the test sequences, as the real one is longer than most prompts and answers.
        layer_types=["sliding_attention"] * (spec.text_layers - 1) + ["full_attention"],
        sliding_window=512,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
    )
    vision_config = SiglipVisionConfig(
        hidden_size=spec.vision_hidden,
        intermediate_size=spec.vision_intermediate,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        vision_use_head=False,
    )
    mm_tokens_per_image = TOKENS_PER_SIDE**2
    config = Gemma3Config(
        text_config=text_config,
        vision_config=vision_config,
        mm_tokens_per_image=mm_tokens_per_image,
        boi_token_index=ids(NAMED_TOKENS["boi_token"]),
        eoi_token_index=ids(NAMED_TOKENS["eoi_token"]),
        image_token_index=ids(NAMED_TOKENS["image_token"]),
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    # Gemma 3 initialises the projection of image features into the language model at zero (trained checkpoints
    # overwrite it): the image would then have no effect at all.
    projection = model.model.multi_modal_projector.mm_input_projection_weight
    with torch.no_grad():
        projection.normal_(mean=0.0, std=config.initializer_range)
    image_processor = Gemma3ImageProcessorPil(size={"height": spec.image_size, "width": spec.image_size})
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_length=mm_tokens_per_image,
        chat_template=tokenizer.chat_template,
    )
    return model, processor


FAMILY = Family(
    name="gemma3",
    display="Gemma 3",
    examples="google/gemma-3-4b-it",
    build=build,
    notes="image features projected by a matrix that starts at zero (re-initialised); bidirectional attention over "
    "image tokens (token_type_ids); sequences longer than the sliding window get plain forwards instead of prefix "
    "sharing",
)
