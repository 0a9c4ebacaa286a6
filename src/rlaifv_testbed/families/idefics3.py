"""Idefics3: a SigLIP vision tower, a pixel-shuffle connector and a Llama 3 language model.

Images are split into tiles of the vision tower's side plus a downscaled global view; each tile is wrapped in
`<fake_token_around_image>` and tagged with its `<row_i_col_j>` (the global view with `<global-img>`).
"""

import torch
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    Idefics3VisionConfig,
)

from ..models import TinyVLMPreset, _llama_text_config
from ..tokenizer import family_chat_template, family_tokenizer
from . import Family


SCALE_FACTOR = 2  # pixel shuffle: (scale x scale) patches become one token


def tile_markup() -> list[str]:
    """The markup of split images: tile wrappers, the global view's tag and the 6x6 grid of row/column tags."""
    rows_cols = [f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)]
    return ["<fake_token_around_image>", "<global-img>", *rows_cols]


def image_seq_len(spec: TinyVLMPreset) -> int:
    """Image tokens per tile: the vision tower's patches after the pixel shuffle."""
    return (spec.image_size // spec.patch_size) ** 2 // SCALE_FACTOR**2


def vision_config(config_class, spec: TinyVLMPreset):
    return config_class(
        hidden_size=spec.vision_hidden,
        intermediate_size=spec.vision_intermediate,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
    )


def tiling_sizes(spec: TinyVLMPreset) -> dict:
    """Tiles of the vision tower's side; images are first resized to twice that side (longest edge), so ShapesWorld's
    48x48 scenes become 2x2 tiles and a global view (the real checkpoints: 364-pixel tiles, 4x364 longest edge)."""
    return {"size": {"longest_edge": 2 * spec.image_size}, "max_image_size": {"longest_edge": spec.image_size}}


def splitting_config(config_class, vision_config_class, spec: TinyVLMPreset, tokenizer):
    """The config of an Idefics3-style model (Idefics3, SmolVLM): a SigLIP tower, pixel shuffle, a Llama model."""
    return config_class(
        vision_config=vision_config(vision_config_class, spec),
        text_config=_llama_text_config(spec, tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=SCALE_FACTOR,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def build(spec: TinyVLMPreset, seed: int):
    tokenizer = family_tokenizer(
        family_chat_template("idefics3"),
        special_tokens=tile_markup(),
        named_tokens={"image_token": "<image>"},
        eos_token="<end_of_utterance>",
        bos_token="<|begin_of_text|>",
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(splitting_config(Idefics3Config, Idefics3VisionConfig, spec, tokenizer))
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(do_image_splitting=True, **tiling_sizes(spec)),
        tokenizer=tokenizer,
        image_seq_len=image_seq_len(spec),
        chat_template=tokenizer.chat_template,
    )
    return model, processor


FAMILY = Family(
    name="idefics3",
    display="Idefics3",
    examples="HuggingFaceM4/Idefics3-8B-Llama3",
    build=build,
    notes="image splitting: tiles tagged <row_i_col_j> plus a global view; pixel-shuffle connector",
)
