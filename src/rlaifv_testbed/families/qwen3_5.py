"""Qwen3.5: a natively multimodal hybrid model. Its language model interleaves linear-attention layers (Gated DeltaNet:
a short causal convolution and a gated delta-rule recurrent state) with gated full-attention layers (three to one in
the real checkpoints, one to one here), with partial interleaved 3-D rotary positions; the vision tower is Qwen3-VL's
without DeepStack."""

from __future__ import annotations

import torch

from ..models import _mrope_text_config, _qwen_vision_token_ids
from ..tokenizer import family_chat_template
from . import Family
from .qwen3_vl import qwen3_processor, qwen3_tokenizer, qwen3_vision_config


def hybrid_text_config(spec, tokenizer) -> dict:
    """The hybrid text config: one Gated DeltaNet layer per full-attention layer, attention heads of twice the
    preset's size (like the small checkpoints, whose heads span more than the hidden size) with a quarter of each head
    rotary (Qwen3.5's `partial_rotary_factor`), and interleaved M-RoPE sections of about a third of the rotary half each
    (Qwen3.5's [11, 11, 10] of 32; [2, 1, 1] of 4 for the tiny preset)."""
    head_dim = 2 * spec.text_hidden // spec.text_heads
    half = head_dim // 4 // 2
    spatial = max(1, half // 3)
    config = _mrope_text_config(spec, tokenizer)
    layers = spec.text_layers
    layer_types = ["linear_attention", "full_attention"] * (layers // 2) + ["full_attention"] * (layers % 2)
    config.update(
        head_dim=head_dim,
        layer_types=layer_types,
        linear_conv_kernel_dim=4,
        linear_key_head_dim=spec.text_hidden // spec.text_heads,
        linear_value_head_dim=spec.text_hidden // spec.text_heads,
        linear_num_key_heads=spec.text_kv_heads,
        linear_num_value_heads=spec.text_heads,
        rope_parameters={
            "rope_type": "default", "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25,
            "mrope_section": [half - 2 * spatial, spatial, spatial], "mrope_interleaved": True,
        },
    )  # fmt: skip
    return config


def build(spec, seed: int):
    from tokenizers import Regex, normalizers, pre_tokenizers
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration
    from transformers.models.qwen3_5.tokenization_qwen3_5 import PRETOKENIZE_REGEX

    # The small checkpoints (0.8B, 2B) ship the template that answers without a thinking block by default.
    tokenizer = qwen3_tokenizer(family_chat_template("qwen3_5_nothink"))
    # A saved Qwen3.5 model's tokenizer loads as `Qwen3_5Tokenizer`, which rebuilds its pipeline around the BPE: give
    # the one built here the same normalizer and pre-tokenizer, so that it tokenizes like the one loaded back.
    backend = tokenizer.backend_tokenizer
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    config = Qwen3_5Config(
        text_config=hybrid_text_config(spec, tokenizer),
        vision_config=qwen3_vision_config(spec),
        tie_word_embeddings=False,
        **_qwen_vision_token_ids(tokenizer),
    )
    torch.manual_seed(seed)
    model = Qwen3_5ForConditionalGeneration(config)
    return model, qwen3_processor(spec, tokenizer)


FAMILY = Family(
    name="qwen3_5",
    display="Qwen3.5",
    examples="Qwen/Qwen3.5-0.8B, Qwen/Qwen3.5-2B",
    build=build,
    needs_torchvision=True,
    notes=(
        "hybrid: linear-attention layers carry a recurrent state (no padding or packing after a shared prefix); "
        "the non-thinking chat template"
    ),
)
