"""LLaVA (1.5): a CLIP vision tower, an MLP projector and a Llama language model."""

from ..models import _llava, project_tokenizer
from . import Family


FAMILY = Family(
    name="llava",
    display="LLaVA-1.5",
    examples="llava-hf/llava-1.5-7b-hf",
    build=lambda spec, seed: _llava(spec, project_tokenizer("llava", spec), seed),
    notes="one `<image>` placeholder expanded to the vision tower's patch features",
)
