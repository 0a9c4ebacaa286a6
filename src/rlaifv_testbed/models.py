"""Tiny real vision-language models, built offline from configs.

`build_tiny_vlm` creates a randomly initialised vision-language model (LLaVA, LLaVA-NeXT with its any-resolution
tiling, Qwen2-VL or Qwen2.5-VL) together with a processor and a locally trained tokenizer, saves them with
`save_pretrained` (safetensors) and returns the directory, which loads back through
`AutoModelForImageTextToText.from_pretrained` and `AutoProcessor.from_pretrained` like any checkpoint on the Hub.
`build_tiny_causal_lm` does the same for text-only splitters (Llama 3 and Qwen2.5 chat formats). Nothing is
downloaded. The same seed always gives identical weights.

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
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    LlavaProcessor,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProcessorMixin,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from .tokenizer import build_tokenizer, family_chat_template


CAUSAL_LM_FAMILIES = ("llama", "qwen2")


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
    """The tiny architectures (families) that can be built in this environment."""
    from .families import FAMILIES

    return [name for name, family in FAMILIES.items() if not family.needs_torchvision or torchvision_available()]


def build_tiny_vlm(
    output_dir: str | Path,
    arch: str = "llava",
    preset: str | TinyVLMPreset = "tiny",
    seed: int = 0,
) -> Path:
    """Build, save and return the directory of a tiny vision-language model with its processor.

    Args:
        output_dir: Where to save the model, processor and tokenizer.
        arch: A family of `rlaifv_testbed.families.FAMILIES` (its `model_type`).
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
    from .families import FAMILIES

    if arch not in FAMILIES:
        raise ValueError(f"Unknown architecture {arch!r}; expected one of {sorted(FAMILIES)}")
    family = FAMILIES[arch]
    if family.needs_torchvision and not torchvision_available():
        raise ImportError(f"{family.display} processors need torchvision: `pip install torchvision`")
    spec = PRESETS[preset] if isinstance(preset, str) else preset
    model, processor = family.build(spec, seed)
    tokenizer = getattr(processor, "tokenizer", processor)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model.eval(), processor


def project_tokenizer(arch: str, spec: TinyVLMPreset):
    """The tokenizer the project's first tiny models (and the built-in weights) use for `arch`."""
    return build_tokenizer(arch, spec.vocab_size)


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


def _clip_vision_config(spec: TinyVLMPreset) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=spec.vision_hidden,
        intermediate_size=spec.vision_intermediate,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
    )


def _llava(spec: TinyVLMPreset, tokenizer, seed: int):
    num_patches = (spec.image_size // spec.patch_size) ** 2
    classes = (LlavaConfig, LlavaForConditionalGeneration, CLIPImageProcessorPil, LlavaProcessor)
    return _llava_family(spec, tokenizer, seed, *classes, config_extra={"image_seq_length": num_patches})


def _llava_next(spec: TinyVLMPreset, tokenizer, seed: int):
    """LLaVA-NeXT tiles an image into crops of the vision tower's size at the best of its grid resolutions
    ("anyres"), plus a downscaled view of the whole image: ShapesWorld's 48x48 scenes go to 64x64, four crops."""
    size = spec.image_size
    pinpoints = {"image_grid_pinpoints": [[size, size], [size, 2 * size], [2 * size, size], [2 * size, 2 * size]]}
    classes = (LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessor, LlavaNextProcessor)
    return _llava_family(spec, tokenizer, seed, *classes, config_extra=pinpoints, image_processor_extra=pinpoints)


def _llava_family(
    spec: TinyVLMPreset, tokenizer, seed: int, config_class, model_class, image_processor_class, processor_class,
    config_extra: dict, image_processor_extra: dict | None = None,
):  # fmt: skip
    """A CLIP vision tower, a projector and a Llama language model, with the family's processor."""
    config = config_class(
        vision_config=_clip_vision_config(spec),
        text_config=_llama_text_config(spec, tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids(tokenizer.image_token),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        tie_word_embeddings=False,
        **config_extra,
    )
    torch.manual_seed(seed)
    model = model_class(config)
    image_processor = image_processor_class(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
        **(image_processor_extra or {}),
    )
    processor = processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=tokenizer.chat_template,
    )
    return model, processor


def _mrope_text_config(spec: TinyVLMPreset, tokenizer) -> dict:
    """The text config of the Qwen2-VL family: a multimodal rotary embedding whose (time, height, width) sections
    split the rotary half-dimension."""
    half = spec.text_hidden // spec.text_heads // 2
    temporal = half // 4
    mrope_section = [temporal, (half - temporal) // 2, half - temporal - (half - temporal) // 2]
    return {
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
    }


def _qwen_vision_token_ids(tokenizer) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }


def _qwen_processor(processor_class, spec: TinyVLMPreset, tokenizer, max_pixels: int):
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    sizes = {
        "min_pixels": spec.image_size * spec.image_size, "max_pixels": max_pixels, "patch_size": spec.patch_size,
        "merge_size": 2,
    }  # fmt: skip
    return processor_class(
        image_processor=Qwen2VLImageProcessor(temporal_patch_size=2, **sizes),
        video_processor=Qwen2VLVideoProcessor(temporal_patch_size=2, **sizes),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )


def _qwen2_vl(spec: TinyVLMPreset, tokenizer, seed: int):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    config = Qwen2VLConfig(
        text_config=_mrope_text_config(spec, tokenizer),
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
        tie_word_embeddings=False,
        **_qwen_vision_token_ids(tokenizer),
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    return model, _qwen_processor(Qwen2VLProcessor, spec, tokenizer, spec.image_size * spec.image_size)


def _qwen2_5_vl(spec: TinyVLMPreset, tokenizer, seed: int):
    """Qwen2.5-VL: windowed attention in the vision tower (full attention in its last layer) and dynamic
    resolution (images up to twice the preset's side keep their own size)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    config = Qwen2_5_VLConfig(
        text_config=_mrope_text_config(spec, tokenizer),
        vision_config={
            "depth": spec.vision_layers,
            "hidden_size": spec.vision_hidden,
            "intermediate_size": spec.vision_intermediate,
            "num_heads": spec.vision_heads,
            "out_hidden_size": spec.text_hidden,
            "patch_size": spec.patch_size,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 4 * spec.patch_size,
            "fullatt_block_indexes": [spec.vision_layers - 1],
        },
        tie_word_embeddings=False,
        **_qwen_vision_token_ids(tokenizer),
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    return model, _qwen_processor(Qwen2_5_VLProcessor, spec, tokenizer, 4 * spec.image_size * spec.image_size)


def build_tiny_causal_lm(
    output_dir: str | Path, family: str = "llama", seed: int = 0, preset: str | TinyVLMPreset = "tiny"
) -> Path:
    """Build, save and return the directory of a tiny causal language model (a stand-in for a claim splitter).

    Args:
        output_dir: Where to save the model and tokenizer.
        family: "llama" (Llama 3 chat format) or "qwen2" (Qwen2.5 chat format), each with the family's real chat
            template and special tokens.
        seed: Seed of the random initialisation.
        preset: Sizes (its `text_*` fields and vocabulary): "tiny", "small" or a `TinyVLMPreset`.

    Returns:
        `output_dir` as a `Path`, loadable with `AutoModelForCausalLM` and `AutoTokenizer`.
    """
    model, tokenizer = make_tiny_causal_lm(family, seed, preset)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def make_tiny_causal_lm(
    family: str = "llama", seed: int = 0, preset: str | TinyVLMPreset = "tiny"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The in-memory model and tokenizer that `build_tiny_causal_lm` saves."""
    if family not in CAUSAL_LM_FAMILIES:
        raise ValueError(f"Unknown causal LM family {family!r}; expected one of {CAUSAL_LM_FAMILIES}")
    spec = PRESETS[preset] if isinstance(preset, str) else preset
    tokenizer = build_tokenizer("llava", spec.vocab_size)
    if family == "llama":
        special = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        tokenizer.add_special_tokens({"additional_special_tokens": special})
        tokenizer.bos_token, tokenizer.eos_token = "<|begin_of_text|>", "<|eot_id|>"
        tokenizer.chat_template = family_chat_template("llama3")
        config = _llama_text_config(spec, tokenizer)
        config.bos_token_id = tokenizer.bos_token_id
        model_class = LlamaForCausalLM
    else:
        tokenizer.chat_template = family_chat_template("qwen2_5")
        config = _llama_text_config(spec, tokenizer, config_class=Qwen2Config)
        model_class = Qwen2ForCausalLM
    torch.manual_seed(seed)
    model = model_class(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval(), tokenizer


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
