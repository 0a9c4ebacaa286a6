"""Qwen2-VL: dynamic-resolution vision tower and 3-D multimodal rotary positions (M-RoPE)."""

from ..models import _qwen2_vl, project_tokenizer
from . import Family


FAMILY = Family(
    name="qwen2_vl",
    display="Qwen2-VL",
    examples="Qwen/Qwen2-VL-7B-Instruct",
    build=lambda spec, seed: _qwen2_vl(spec, project_tokenizer("qwen2_vl", spec), seed),
    needs_torchvision=True,
    notes="3-D rotary positions continue after the image in prefix sharing",
)
