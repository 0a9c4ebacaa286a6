"""Qwen2.5-VL: Qwen2-VL with windowed attention in the vision tower."""

from ..models import _qwen2_5_vl, project_tokenizer
from . import Family


FAMILY = Family(
    name="qwen2_5_vl",
    display="Qwen2.5-VL",
    examples="Qwen/Qwen2.5-VL-7B-Instruct",
    build=lambda spec, seed: _qwen2_5_vl(spec, project_tokenizer("qwen2_5_vl", spec), seed),
    needs_torchvision=True,
    notes="the family's chat template; dynamic resolution (images up to 2x the preset's side keep their size)",
)
