"""Tiny real vision-language models, built offline from configs.

`build_tiny_vlm` creates a randomly initialised LLaVA (CLIP vision tower + Llama) or Qwen2-VL model together with a
processor and a locally trained tokenizer, saves them with `save_pretrained` (safetensors) and returns the directory,
which loads back through `AutoModelForImageTextToText.from_pretrained` and `AutoProcessor.from_pretrained` like any
checkpoint on the Hub. Nothing is downloaded. The same seed always gives identical weights.

Presets: "tiny" (about 0.2M parameters, for tests) and "small" (about 1M parameters, which really learns ShapesWorld).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedModel,
    ProcessorMixin,
)

from .tokenizer import build_tokenizer


ARCHITECTURES = ("llava", "qwen2_vl")


@dataclass(frozen=True)
class TinyVLMPreset:
    """Sizes of a tiny VLM. `image_size` is the side the processor resizes images to."""

    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_intermediate: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_intermediate: int
    image_size: int
    patch_size: int = 8
    vocab_size: int = 1024


PRESETS: dict[str, TinyVLMPreset] = {
    "tiny": TinyVLMPreset(
        text_hidden=64, text_layers=2, text_heads=4, text_kv_heads=2, text_intermediate=128,
        vision_hidden=32, vision_layers=2, vision_heads=2, vision_intermediate=64, image_size=32,
    ),
    "small": TinyVLMPreset(
        text_hidden=96, text_layers=4, text_heads=4, text_kv_heads=2, text_intermediate=192,
        vision_hidden=128, vision_layers=2, vision_heads=4, vision_intermediate=256, image_size=48,
    ),
}  # fmt: skip


def torchvision_available() -> bool:
    """Whether torchvision is importable; Qwen2-VL processors need it (for their video processor)."""
    return importlib.util.find_spec("torchvision") is not None


def available_architectures() -> list[str]:
    """The tiny architectures that can be built in this environment."""
    return [arch for arch in ARCHITECTURES if arch != "qwen2_vl" or torchvision_available()]


def build_tiny_vlm(
    output_dir: str | Path,
    arch: str = "llava",
    preset: str | TinyVLMPreset = "tiny",
    seed: int = 0,
) -> Path:
    """Build, save and return the directory of a tiny vision-language model with its processor.

    Args:
        output_dir: Where to save the model, processor and tokenizer.
        arch: "llava" (always available) or "qwen2_vl" (needs torchvision).
        preset: "tiny", "small" or a `TinyVLMPreset`.
        seed: Seed of the random initialisation; the same seed gives identical weights.

    Returns:
        `output_dir` as a `Path`, loadable with `AutoModelForImageTextToText` and `AutoProcessor`.
    """
    model, processor = make_tiny_vlm(arch, preset, seed)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir


def make_tiny_vlm(
    arch: str = "llava", preset: str | TinyVLMPreset = "tiny", seed: int = 0
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """The in-memory model and processor that `build_tiny_vlm` saves."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {arch!r}; expected one of {ARCHITECTURES}")
    spec = PRESETS[preset] if isinstance(preset, str) else preset
    tokenizer = build_tokenizer(arch, spec.vocab_size)
    if arch == "llava":
        model, processor = _llava(spec, tokenizer, seed)
    else:
        if not torchvision_available():
            raise ImportError("Qwen2-VL processors need torchvision: `pip install torchvision`")
        model, processor = _qwen2_vl(spec, tokenizer, seed)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model.eval(), processor


def _llama_text_config(spec: TinyVLMPreset, tokenizer, config_class=LlamaConfig, **extra):
    return config_class(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_intermediate,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
        **extra,
    )


def _llava(spec: TinyVLMPreset, tokenizer, seed: int):
    num_patches = (spec.image_size // spec.patch_size) ** 2
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=spec.vision_hidden,
            intermediate_size=spec.vision_intermediate,
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=spec.vision_heads,
            image_size=spec.image_size,
            patch_size=spec.patch_size,
        ),
        text_config=_llama_text_config(spec, tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids(tokenizer.image_token),
        image_seq_length=num_patches,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=tokenizer.chat_template,
    )
    return model, processor


def _qwen2_vl(spec: TinyVLMPreset, tokenizer, seed: int):
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    head_dim = spec.text_hidden // spec.text_heads
    # The multimodal rotary sections (time, height, width) split the rotary half-dimension.
    half = head_dim // 2
    temporal = half // 4
    mrope_section = [temporal, (half - temporal) // 2, half - temporal - (half - temporal) // 2]
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": spec.text_hidden,
            "intermediate_size": spec.text_intermediate,
            "num_hidden_layers": spec.text_layers,
            "num_attention_heads": spec.text_heads,
            "num_key_value_heads": spec.text_kv_heads,
            "max_position_embeddings": 1024,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section},
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": None,
            "tie_word_embeddings": False,
        },
        vision_config={
            "depth": spec.vision_layers,
            "embed_dim": spec.vision_hidden,
            "hidden_size": spec.text_hidden,
            "num_heads": spec.vision_heads,
            "mlp_ratio": spec.vision_intermediate // spec.vision_hidden,
            "patch_size": spec.patch_size,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    pixels = spec.image_size * spec.image_size
    sizes = {"min_pixels": pixels, "max_pixels": pixels, "patch_size": spec.patch_size, "merge_size": 2}
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(temporal_patch_size=2, **sizes),
        video_processor=Qwen2VLVideoProcessor(temporal_patch_size=2, **sizes),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )
    return model, processor


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
