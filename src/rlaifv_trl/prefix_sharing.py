"""Encode a shared (image + text) prefix once and run many text continuations on its KV cache.

RLAIF-V asks many questions about one image (the labeler) and scores many answers to one prompt (Best-of-N). Both
share a long prefix, the image tokens above all, so the prefix is run once with `use_cache=True` and the
continuations attend to its cache. Positions continue where the prefix ends, including the 3-D multimodal rotary
positions of the Qwen2-VL family, so the logits equal those of a plain forward over prefix + continuation (up to float
rounding).

`next_token_logits` (the labeler's path) packs the continuations of a forward pass into one row, a 4-D attention
mask keeping them apart, and runs it on a read-only view of the prefix cache: the prefix's keys and values are held
once, whatever the number of continuations, and the pass's memory grows with the continuations' tokens. Padded
batches (`pack=False`, or an attention implementation that takes no 4-D mask: `packing_refusal`) give each row its
own copy of the prefix cache: memory grows with rows x prefix. `continuation_logits` and `continuation_log_probs` run
each forward pass on a copy of the prefix cache.

Models with a recurrent state next to (or instead of) their KV cache (linear-attention, state-space or short
convolution layers: Qwen3.5, MiniCPM-V 4.6, ...) update it token by token: padding between the prefix and a
continuation, or continuations packed into one row, would run through it. Their continuations run one at a time, each
on its own copy of the prefix cache and unpadded: still exact, and the prefix is still encoded once.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import (
    Cache,
    DynamicLayer,
    DynamicSlidingWindowLayer,
    LinearAttentionCacheLayerMixin,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

from .log_probs import token_log_probs


logger = logging.getLogger(__name__)


@dataclass
class EncodedPrefix:
    """A prefix run once through the model.

    Attributes:
        cache: Its KV cache (batch of one).
        length: Number of prefix tokens.
        next_position: Rotary position of the first continuation token.
        multimodal_rope: Whether the model takes 3-D (temporal, height, width) positions.
        last_logits: Logits at the last prefix position, shape `(vocab,)`: the prediction of the first continuation
            token.
        recurrent: The model keeps a recurrent state (`has_recurrent_state`): continuations run one at a time,
            unpadded and unpacked.
    """

    cache: Cache
    length: int
    next_position: int
    multimodal_rope: bool
    last_logits: torch.Tensor
    recurrent: bool = False


def has_recurrent_state(model: PreTrainedModel, cache: Cache | None = None) -> bool:
    """Whether `model` keeps a state that every token updates in order (linear-attention, state-space or short
    convolution layers): transformers marks such models `_is_stateful`, and their caches hold linear-attention layers
    (LFM2's convolutions too, which are not marked). Padding or packing would run through that state."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base, "_is_stateful", False):
        return True
    return any(isinstance(layer, LinearAttentionCacheLayerMixin) for layer in getattr(cache, "layers", ()))


_WARNED: set[tuple[str, str]] = set()


def prefix_sharing_refusal(model: PreTrainedModel, length: int) -> str | None:
    """Why sharing a prefix cache would not give a plain forward's logits for sequences of `length` tokens (prefix
    plus the longest continuation), or `None` when it would.

    A sliding-window layer (Gemma 3, Mistral, ...) keeps only the last window of the cache and counts padding slots
    into the window: past the window, shared and plain forwards differ. Callers run plain forwards instead, and the
    reason is logged once per model family.
    """
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None) or []
    sliding = window is not None and (
        "sliding_attention" in layer_types or getattr(config, "use_sliding_window", not layer_types)
    )
    reason = None
    if sliding and length > window:
        reason = f"{length} tokens exceed the sliding window ({window}) of its attention layers"
    if reason is not None:
        family = getattr(model.config, "model_type", type(model).__name__)
        if (family, reason) not in _WARNED:
            _WARNED.add((family, reason))
            logger.warning("Prefix sharing is off for %s: %s; plain forward passes instead", family, reason)
    return reason


def _rope_index_owner(model: PreTrainedModel) -> Any | None:
    """The module that computes multimodal rotary positions (Qwen2-VL family), if any."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for candidate in (base, getattr(base, "model", None)):
        if candidate is not None and hasattr(candidate, "get_rope_index"):
            return candidate
    return None


@torch.no_grad()
def encode_prefix(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> EncodedPrefix:
    """Run the prefix (one row of processor outputs: `input_ids`, `pixel_values`, ...) and keep its cache."""
    input_ids = inputs["input_ids"]
    if input_ids.shape[0] != 1:
        raise ValueError(f"encode_prefix takes one prefix at a time, got a batch of {input_ids.shape[0]}")
    if "attention_mask" in inputs and not bool(inputs["attention_mask"].all()):
        raise ValueError("The prefix must not contain padding")
    length = input_ids.shape[1]
    kwargs = dict(inputs)
    owner = _rope_index_owner(model)
    multimodal_rope = owner is not None and "mm_token_type_ids" in inputs
    if multimodal_rope:
        rope_kwargs = {k: inputs[k] for k in ("mm_token_type_ids", "image_grid_thw", "video_grid_thw") if k in inputs}
        position_ids, _ = owner.get_rope_index(input_ids, attention_mask=inputs.get("attention_mask"), **rope_kwargs)
        kwargs["position_ids"] = position_ids
        next_position = int(position_ids.max()) + 1
    else:
        next_position = length
    outputs = model(**kwargs, use_cache=True, logits_to_keep=1)
    cache = getattr(outputs, _CACHE_ARGUMENT)
    recurrent = has_recurrent_state(model, cache)
    family = getattr(model.config, "model_type", type(model).__name__)
    if recurrent and (family, "recurrent") not in _WARNED:
        _WARNED.add((family, "recurrent"))
        logger.info(
            "%s keeps a recurrent state (linear-attention or convolution layers): the continuations of a shared "
            "prefix run one at a time, unpadded, each on a copy of the prefix cache",
            family,
        )
    return EncodedPrefix(
        cache=cache,
        length=length,
        next_position=next_position,
        multimodal_rope=multimodal_rope,
        last_logits=outputs.logits[0, -1],
        recurrent=recurrent,
    )


def _padded_batch(
    prefix: EncodedPrefix, chunk: Sequence[Sequence[int]], left_padded: bool = False
) -> tuple[dict[str, torch.Tensor], int]:
    """The continuations as the rows of a padded batch: model inputs and number of rows.

    Right padding keeps every continuation at the start of its row; left padding puts the padding between the prefix
    and the continuation (masked, positions unchanged), so that the last column holds every row's last token.
    """
    device = prefix.last_logits.device
    rows, width = len(chunk), max(len(ids) for ids in chunk)
    input_ids = torch.zeros((rows, width), dtype=torch.long, device=device)
    mask = torch.zeros((rows, prefix.length + width), dtype=torch.long, device=device)
    mask[:, : prefix.length] = 1
    positions = torch.full((rows, width), prefix.next_position, dtype=torch.long, device=device)
    for row, ids in enumerate(chunk):
        begin = width - len(ids) if left_padded else 0
        input_ids[row, begin : begin + len(ids)] = torch.as_tensor(ids, device=device)
        mask[row, prefix.length + begin : prefix.length + begin + len(ids)] = 1
        positions[row, begin : begin + len(ids)] = torch.arange(
            prefix.next_position, prefix.next_position + len(ids), device=device
        )
    return {"input_ids": input_ids, "attention_mask": mask, "position_ids": positions}, rows


def _packed_batch(
    prefix: EncodedPrefix, chunk: Sequence[Sequence[int]], dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], int]:
    """The continuations packed into one row with no padding: model inputs and number of rows (1).

    A 4-D attention mask lets each token see the prefix and the tokens before it in its own continuation; each
    continuation's positions start where the prefix ends.
    """
    device = prefix.last_logits.device
    lengths = [len(ids) for ids in chunk]
    total = sum(lengths)
    input_ids = torch.tensor([[token for ids in chunk for token in ids]], dtype=torch.long, device=device)
    mask = torch.full((total, prefix.length + total), torch.finfo(dtype).min, dtype=dtype, device=device)
    mask[:, : prefix.length] = 0
    positions = torch.empty((1, total), dtype=torch.long, device=device)
    start = 0
    for length in lengths:  # each continuation sees its own earlier tokens
        own = mask[start : start + length, prefix.length + start : prefix.length + start + length]
        own.masked_fill_(torch.ones((length, length), dtype=torch.bool, device=device).tril(), 0)
        positions[0, start : start + length] = torch.arange(
            prefix.next_position, prefix.next_position + length, device=device
        )
        start += length
    return {"input_ids": input_ids, "attention_mask": mask[None, None], "position_ids": positions}, 1


def _on_prefix(
    prefix: EncodedPrefix, inputs: dict[str, torch.Tensor], rows: int, shared: bool = False
) -> dict[str, Any]:
    """`inputs` with the prefix cache for `rows` rows, and 3-D positions for multimodal rotary models.

    Padded rows each get a copy of the cache. With `shared` (one packed row), the forward reads the prefix cache's own
    tensors (`_read_only_view`) and leaves them as they are.
    """
    if prefix.multimodal_rope:
        inputs["position_ids"] = inputs["position_ids"].unsqueeze(0).expand(3, -1, -1)
    if shared:
        return {**inputs, _CACHE_ARGUMENT: _read_only_view(prefix.cache)}
    cache = copy.deepcopy(prefix.cache)
    if rows > 1:  # linear-attention cache layers cannot repeat their states (transformers 5.24); one row needs none
        cache.batch_repeat_interleave(rows)
    return {**inputs, _CACHE_ARGUMENT: cache}


# Cache layers whose `update` returns the cached states followed by the new ones (sliding-window layers: unless they
# record the past for a later `crop`).
_CONCATENATING_LAYERS = (DynamicLayer, DynamicSlidingWindowLayer)


def _read_only_view(cache: Cache) -> Cache:
    """A cache that a forward pass reads like `cache` itself but that stores nothing: `cache` keeps exactly its states,
    and no tensor is copied up front.

    Each layer of the view returns the prefix's states followed by the new ones, as `cache`'s own layer would, without
    keeping them: the concatenation of one layer is freed once that layer's attention is done, so a forward holds the
    prefix's keys and values once plus one layer's worth of its own. (Running on `cache` and cropping it back would
    keep every layer's concatenation until the end, as views, and cannot restore a sliding-window layer that went past
    its window.) Caches with other layers get one deep copy.
    """
    layers = getattr(cache, "layers", None)
    if not layers or not all(
        type(layer) in _CONCATENATING_LAYERS and layer.is_initialized and not getattr(layer, "record_past", False)
        for layer in layers
    ):
        return copy.deepcopy(cache)
    view = copy.copy(cache)
    view.layers = [_reading_layer(layer) for layer in layers]
    return view


def _reading_layer(layer: DynamicLayer) -> DynamicLayer:
    """A shallow copy of `layer` whose `update` returns its states followed by the new ones, and stores nothing."""
    view = copy.copy(layer)

    def update(key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, ...]:
        return torch.cat([layer.keys, key_states], dim=-2), torch.cat([layer.values, value_states], dim=-2)

    view.update = update
    return view


# transformers 5.24 renamed `past_key_values` (argument of `forward` and field of its outputs) to `cache`.
_CACHE_ARGUMENT = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def _check_continuations(continuations: Sequence[Sequence[int]]) -> None:
    if any(len(ids) == 0 for ids in continuations):
        raise ValueError("Every continuation needs at least one token")


def _continuation_batches(
    model: PreTrainedModel,
    prefix: EncodedPrefix,
    continuations: Sequence[Sequence[int]],
    batch_size: int,
    pack: bool,
) -> Iterator[tuple[Sequence[Sequence[int]], list[torch.Tensor]]]:
    """Run the continuations, `batch_size` at a time, on a copy of the prefix cache; yield them and their logits."""
    _check_continuations(continuations)
    if prefix.recurrent:  # one at a time: padding or packing would run through the recurrent state
        batch_size, pack = 1, False
    for start in range(0, len(continuations), batch_size):
        chunk = continuations[start : start + batch_size]
        inputs, rows = _packed_batch(prefix, chunk, model.dtype) if pack else _padded_batch(prefix, chunk)
        logits = model(**_on_prefix(prefix, inputs, rows), use_cache=True).logits
        lengths = [len(ids) for ids in chunk]
        yield chunk, list(logits[0].split(lengths)) if pack else [logits[row, :n] for row, n in enumerate(lengths)]


@torch.no_grad()
def continuation_logits(
    model: PreTrainedModel,
    prefix: EncodedPrefix,
    continuations: Sequence[Sequence[int]],
    batch_size: int = 64,
    last_only: bool = False,
    pack: bool = False,
) -> list[torch.Tensor]:
    """Logits at every position of each continuation, given the shared prefix.

    Args:
        model: The model that encoded `prefix`.
        prefix: The encoded prefix.
        continuations: Token ids of each continuation (non-empty).
        batch_size: Continuations per forward pass; each pass uses its own copy of the prefix cache.
        last_only: Return only the logits at the last position of each continuation.
        pack: Pack the continuations of a forward pass into one sequence (a 4-D attention mask keeps them apart)
            instead of padding them to the longest: cheaper when their lengths differ a lot or the prefix is long,
            dearer for many short continuations of equal length (attention then spans the whole pack).

    Returns:
        One tensor per continuation: `(len(continuation), vocab)` logits, or `(vocab,)` with `last_only`.
    """
    results: list[torch.Tensor] = []
    for _, logits in _continuation_batches(model, prefix, continuations, batch_size, pack):
        results += [row[-1] for row in logits] if last_only else logits
    return results


@torch.no_grad()
def continuation_log_probs(
    model: PreTrainedModel,
    prefix: EncodedPrefix,
    continuations: Sequence[Sequence[int]],
    batch_size: int = 64,
    pack: bool = False,
) -> list[torch.Tensor]:
    """Log-probability of every token of each continuation given the prefix and the tokens before it.

    The first token is scored by the prefix's last logits, so a continuation of T tokens needs a forward over its
    first T - 1 tokens only. The logits of a batch are dropped once its log-probabilities are taken. `batch_size` and
    `pack` are as in `continuation_logits`.

    Returns:
        One float32 tensor of shape `(len(continuation),)` per continuation (non-empty).
    """
    _check_continuations(continuations)
    first = prefix.last_logits.float().log_softmax(-1)
    results = [first[ids[0]].reshape(1) for ids in continuations]
    longer = [i for i, ids in enumerate(continuations) if len(ids) > 1]
    heads = [continuations[i][:-1] for i in longer]
    done = 0
    for chunk, logits in _continuation_batches(model, prefix, heads, batch_size, pack):
        for row, head_logits in enumerate(logits):
            index = longer[done + row]
            targets = torch.as_tensor(continuations[index][1:], device=head_logits.device)
            results[index] = torch.cat([results[index], token_log_probs(head_logits, targets)])
        done += len(chunk)
    return results


def packing_refusal(model: PreTrainedModel) -> str | None:
    """Why continuations packed into one row (with a 4-D attention mask) would not give a plain forward's logits on
    `model`, or `None` when they would. Only the eager and SDPA attention implementations take a custom 4-D mask
    (FlashAttention, for one, reads padding from a 2-D mask). Callers pad instead; the reason is logged once per
    model family."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    implementation = getattr(config, "_attn_implementation", None) or "eager"
    reason = None
    if implementation not in ("eager", "sdpa"):
        reason = f"its attention implementation ({implementation}) does not take a 4-D attention mask"
    if reason is not None:
        family = getattr(model.config, "model_type", type(model).__name__)
        if (family, reason) not in _WARNED:
            _WARNED.add((family, reason))
            logger.warning("Packed continuations are off for %s: %s; padded batches instead", family, reason)
    return reason


def _takes_logits_to_keep(model: PreTrainedModel) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


@torch.no_grad()
def next_token_logits(
    model: PreTrainedModel,
    prefix: EncodedPrefix,
    continuations: Sequence[Sequence[int]],
    batch_size: int = 64,
    pack: bool = True,
) -> torch.Tensor:
    """Logits of the token that follows each continuation of the prefix, shape `(len(continuations), vocab)`.

    Like `continuation_logits(..., last_only=True)`, with the language-model head run on the last token of each
    continuation only.

    Args:
        model: The model that encoded `prefix`.
        prefix: The encoded prefix.
        continuations: Token ids of each continuation (non-empty).
        batch_size: Continuations per forward pass.
        pack: Pack the continuations of a forward pass into one row (`_packed_batch`) that reads the prefix cache
            without copying it: memory grows with their tokens, not with rows x prefix. Otherwise (and when `packing_refusal` gives a
            reason) they are left padded, each row with its own copy of the prefix cache. Models with a recurrent
            state run their continuations one at a time, unpadded, either way.
    """
    _check_continuations(continuations)
    if prefix.recurrent:  # one at a time: padding or packing would run through the recurrent state
        batch_size, pack = 1, False
    pack = pack and packing_refusal(model) is None
    keep_indices = pack and _takes_logits_to_keep(model)
    outputs = []
    for start in range(0, len(continuations), batch_size):
        chunk = continuations[start : start + batch_size]
        if not pack:
            inputs, rows = _padded_batch(prefix, chunk, left_padded=True)
            logits = model(**_on_prefix(prefix, inputs, rows), use_cache=True, logits_to_keep=1).logits
            outputs.append(logits[:, -1])
            continue
        inputs, _ = _packed_batch(prefix, chunk, model.dtype)
        last = torch.tensor([len(ids) for ids in chunk], device=prefix.last_logits.device).cumsum(0) - 1
        kwargs = {"logits_to_keep": last} if keep_indices else {}
        logits = model(**_on_prefix(prefix, inputs, 1, shared=True), use_cache=True, **kwargs).logits[0]
        outputs.append(logits if logits.shape[0] == len(chunk) else logits[last])  # some models keep every position
    return torch.cat(outputs)
