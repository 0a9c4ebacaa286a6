"""LLaVA-NeXT (1.6): LLaVA with any-resolution tiling of the image into crops plus an overview."""

from ..models import _llava_next, project_tokenizer
from . import Family


FAMILY = Family(
    name="llava_next",
    display="LLaVA-NeXT",
    examples="llava-hf/llava-v1.6-mistral-7b-hf, llava-hf/llava-v1.6-34b-hf",
    build=lambda spec, seed: _llava_next(spec, project_tokenizer("llava_next", spec), seed),
    notes="any-resolution tiling: 48x48 scenes become four 32x32 crops and an overview",
)
