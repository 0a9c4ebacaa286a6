"""Encode each image once per preference pair in DPO steps.

TRL's vision collator gives every pair's images twice (the chosen rows, then the rejected rows, as
`images * 2`), so the vision tower runs twice on the same pixels. `ImageFeaturesOncePerPair` wraps the
`get_image_features` of the model's innermost vision-language module: when each of its tensor inputs (pixel values,
grid sizes, masks, ...) has a first half equal to its second half, it runs the tower on the first half and repeats
the result. The features of an image do not depend on the other images of the batch (no batch statistics in vision
towers), so the output is what the full call computes, and the gradient reaching the tower is the sum over both
uses, as before. Any other call goes through unchanged.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any

import torch


# Output fields that are per layer (each element a batch), not per image.
_PER_LAYER = {"hidden_states", "attentions", "deepstack_features"}


def _twice(value: Any, per_layer: bool = False) -> Any:
    """`value` computed on the first half of a batch, as the whole batch: tensors concatenated with themselves along
    the image (or patch) axis, per-image sequences repeated, per-layer sequences repeated element by element."""
    if isinstance(value, torch.Tensor):
        return torch.cat([value, value])
    if isinstance(value, (list, tuple)):
        if per_layer:
            return type(value)(_twice(item) for item in value)
        return value + value
    return value


def _halves(value: Any) -> tuple[Any, bool]:
    """The first half of a tensor whose halves are equal (and True), or the value itself (and whether it may stay
    whole: anything but a tensor)."""
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        return value, True
    size = value.shape[0]
    if size % 2 or not torch.equal(value[: size // 2], value[size // 2 :]):
        return value, False
    return value[: size // 2], True


def _innermost_encoders(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Modules with a `get_image_features` none of whose submodules has one (the one the forward calls)."""
    found = [module for module in model.modules() if callable(getattr(type(module), "get_image_features", None))]
    return [
        module
        for module in found
        if not any(other is not module and other in set(module.modules()) for other in found)
    ]


class ImageFeaturesOncePerPair:
    """While `active()`, image features of batches made of two equal halves are computed on one half.

    Args:
        models: The policy (and reference model) to wrap.

    Attributes:
        num_shared: Calls that ran the vision tower on half the images.
        num_whole: Calls that ran it on every image (halves that differ).
    """

    def __init__(self, *models: torch.nn.Module):
        self.num_shared = 0
        self.num_whole = 0
        self._active = False
        self.wrapped = [module for model in models for module in _innermost_encoders(model)]
        for module in self.wrapped:
            original = module.get_image_features
            module.get_image_features = types.MethodType(self._wrapper(original), module)

    def _wrapper(self, original):
        sharing = self

        def get_image_features(module, *args: Any, **kwargs: Any):
            if not sharing._active:
                return original(*args, **kwargs)
            halved_args, halved_kwargs, ok = [], {}, True
            for value in args:
                half, equal = _halves(value)
                halved_args.append(half)
                ok &= equal
            for name, value in kwargs.items():
                half, equal = _halves(value)
                halved_kwargs[name] = half
                ok &= equal
            tensors = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor) and v.dim() > 0]
            if not ok or not tensors:
                sharing.num_whole += 1
                return original(*args, **kwargs)
            sharing.num_shared += 1
            output = original(*halved_args, **halved_kwargs)
            if isinstance(output, dict):  # a ModelOutput: repeat each field
                for key in list(output.keys()):
                    output[key] = _twice(output[key], per_layer=key in _PER_LAYER)
                return output
            return _twice(output)

        return get_image_features

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self._active = True
        try:
            yield
        finally:
            self._active = False
