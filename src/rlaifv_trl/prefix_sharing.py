"""Encode a shared (image + text) prefix once and run many text continuations on its KV cache.

RLAIF-V asks many questions about one image (the labeler) and scores many answers to one prompt (Best-of-N). Both
share a long prefix, the image tokens above all, so the prefix is run once with `use_cache=True` and the
continuations attend to its cache. Positions continue where the prefix ends, including the 3-D multimodal rotary
positions of the Qwen2-VL family, so the logits equal those of a plain forward over prefix + continuation (up to float
rounding).

Every forward pass over continuations reads the prefix cache in place (`_read_only_view`): no copy is made up front,
and each layer repeats the prefix's keys and values per row only while it attends. Packed (`pack=True`, the labeler's
`next_token_logits`), the continuations of a forward pass share a few rows, a 4-D attention mask keeping them apart;
the number of rows is the one that holds the least memory (`_pack_rows`): one row makes attention span all of its
continuations, a row each repeats the prefix once per continuation. Padded batches (`pack=False`, or an attention
implementation that takes no 4-D mask: `packing_refusal`) give each continuation a row of its own.

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
    prefix: EncodedPrefix, chunk: Sequence[Sequence[int]], dtype: torch.dtype, rows: int = 1
) -> tuple[dict[str, torch.Tensor], list[tuple[int, int, int]]]:
    """The continuations packed into `rows` rows: model inputs and each continuation's (row, first column, end column).

    Shortest first, the continuations fill slots of `rows` each: a slot spans the same columns in every row, as many as
    its longest continuation has tokens, and each continuation ends at its slot's last column (the padding before it
    is masked). A 4-D attention mask lets each token see the prefix and the tokens before it in its own continuation;
    each continuation's positions start where the prefix ends. One row (the default) has no padding at all.
    """
    device = prefix.last_logits.device
    order = sorted(range(len(chunk)), key=lambda i: len(chunk[i]))
    slots = [order[start : start + rows] for start in range(0, len(order), rows)]
    widths = [max(len(chunk[i]) for i in slot) for slot in slots]
    width = sum(widths)
    input_ids = [[0] * width for _ in range(rows)]
    positions = [[prefix.next_position] * width for _ in range(rows)]
    real = [[False] * width for _ in range(rows)]
    places: list[tuple[int, int, int]] = [(0, 0, 0)] * len(chunk)
    end = 0
    for slot, slot_width in zip(slots, widths):
        end += slot_width
        for row, i in enumerate(slot):
            begin = end - len(chunk[i])
            places[i] = (row, begin, end)
            input_ids[row][begin:end] = chunk[i]
            positions[row][begin:end] = range(prefix.next_position, prefix.next_position + len(chunk[i]))
            real[row][begin:end] = [True] * len(chunk[i])
    column = torch.arange(width, device=device)
    slot_of = torch.repeat_interleave(torch.arange(len(slots), device=device), torch.tensor(widths, device=device))
    own = (slot_of[:, None] == slot_of[None, :]) & (column[None, :] <= column[:, None])  # (query, key) columns
    seen = own[None] & torch.tensor(real, device=device)[:, None, :]  # a query sees its own continuation's tokens
    mask = torch.zeros((rows, 1, width, prefix.length + width), dtype=dtype, device=device)
    mask[:, 0, :, prefix.length :].masked_fill_(~seen, torch.finfo(dtype).min)
    inputs = {
        "input_ids": torch.tensor(input_ids, dtype=torch.long, device=device),
        "attention_mask": mask,
        "position_ids": torch.tensor(positions, dtype=torch.long, device=device),
    }
    return inputs, places


def _pack_rows(prefix: EncodedPrefix, lengths: Sequence[int]) -> int:
    """The number of rows (`_packed_batch`) that holds the least memory during a forward over continuations of these
    lengths: a layer attends with rows x (prefix + width) keys and values (the prefix repeated per row), under an
    attention mask of rows x width x (prefix + width). One row when the prefix cache cannot be read in place
    (`_read_only_view`).

    Packing every continuation into one row makes the mask span them all (width squared), and attention with it; a
    row each repeats the prefix once per continuation. In between, both stay small: with few key/value channels and a
    short prefix (small models) many rows are best, with a long prefix over many channels one or two.
    """
    if not _shareable(prefix.cache) or len(lengths) < 2:
        return 1
    keys, values = prefix.cache.layers[0].keys, prefix.cache.layers[0].values
    per_token = keys.shape[1] * keys.shape[-1] + values.shape[1] * values.shape[-1]
    ordered = sorted(lengths)

    def memory(rows: int) -> int:
        width = sum(ordered[min(start + rows, len(ordered)) - 1] for start in range(0, len(ordered), rows))
        return rows * (prefix.length + width) * per_token + rows * width * (prefix.length + width)

    return min(range(1, len(ordered) + 1), key=memory)


def _on_prefix(prefix: EncodedPrefix, inputs: dict[str, torch.Tensor], rows: int) -> dict[str, Any]:
    """`inputs` with the prefix cache for `rows` rows (`_read_only_view`), and 3-D positions for multimodal rotary
    models."""
    if prefix.multimodal_rope:
        inputs["position_ids"] = inputs["position_ids"].unsqueeze(0).expand(3, -1, -1)
    return {**inputs, _CACHE_ARGUMENT: _read_only_view(prefix.cache, rows)}


# Cache layers whose `update` returns the cached states followed by the new ones (sliding-window layers: unless they
# record the past for a later `crop`).
_CONCATENATING_LAYERS = (DynamicLayer, DynamicSlidingWindowLayer)


def _shareable(cache: Cache) -> bool:
    """Whether `_read_only_view` can read `cache` in place (every layer concatenates, none records its past)."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(
        type(layer) in _CONCATENATING_LAYERS and layer.is_initialized and not getattr(layer, "record_past", False)
        for layer in layers
    )


def _read_only_view(cache: Cache, rows: int = 1) -> Cache:
    """A cache that a forward pass of `rows` rows reads like `cache` repeated per row but that stores nothing: `cache`
    keeps exactly its states, and no tensor is copied up front.

    Each layer of the view returns the prefix's states (repeated per row) followed by the new ones, as `cache`'s own
    layer would, without keeping them: the concatenation of one layer is freed once that layer's attention is done, so
    a forward holds the prefix's keys and values once plus one layer's worth of rows x (prefix + its tokens). (Running
    on `cache` and cropping it back would keep every layer's concatenation until the end, as views, and cannot
    restore a sliding-window layer that went past its window.) Caches with other layers get one deep copy, repeated
    per row.
    """
    if not _shareable(cache):
        copied = copy.deepcopy(cache)
        # Linear-attention cache layers cannot repeat their states (transformers 5.24); one row needs no repeat.
        if rows > 1:
            copied.batch_repeat_interleave(rows)
        return copied
    view = copy.copy(cache)
    view.layers = [_reading_layer(layer, rows) for layer in cache.layers]
    return view


def _reading_layer(layer: DynamicLayer, rows: int) -> DynamicLayer:
    """A shallow copy of `layer` whose `update` returns its states (repeated per row) followed by the new ones, and
    stores nothing."""
    view = copy.copy(layer)

    def update(key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, ...]:
        keys, values = layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1)
        return torch.cat([keys, key_states], dim=-2), torch.cat([values, value_states], dim=-2)

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
    """Run the continuations, `batch_size` at a time, on the prefix cache; yield them and their logits."""
    _check_continuations(continuations)
    if prefix.recurrent:  # one at a time: padding or packing would run through the recurrent state
        batch_size, pack = 1, False
    for start in range(0, len(continuations), batch_size):
        chunk = continuations[start : start + batch_size]
        if pack:
            rows = _pack_rows(prefix, [len(ids) for ids in chunk])
            inputs, places = _packed_batch(prefix, chunk, model.dtype, rows)
        else:
            inputs, rows = _padded_batch(prefix, chunk)
            places = [(row, 0, len(ids)) for row, ids in enumerate(chunk)]
        logits = model(**_on_prefix(prefix, inputs, rows), use_cache=True).logits
        yield chunk, [logits[row, begin:end] for row, begin, end in places]


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
        batch_size: Continuations per forward pass.
        last_only: Return only the logits at the last position of each continuation.
        pack: Pack the continuations of a forward pass into a few rows (`_packed_batch`, as many as `_pack_rows`
            gives; a 4-D attention mask keeps them apart) instead of a row each padded to the longest: less memory
            when the prefix is long.

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
    rows: int | None = None,
) -> torch.Tensor:
    """Logits of the token that follows each continuation of the prefix, shape `(len(continuations), vocab)`.

    Like `continuation_logits(..., last_only=True)`, with the language-model head run on the last token of each
    continuation only.

    Args:
        model: The model that encoded `prefix`.
        prefix: The encoded prefix.
        continuations: Token ids of each continuation (non-empty).
        batch_size: Continuations per forward pass.
        pack: Pack the continuations of a forward pass into a few rows (`_packed_batch`) that read the prefix cache
            without copying it up front, a 4-D attention mask keeping them apart. Otherwise (and when
            `packing_refusal` gives a reason) each continuation is a left-padded row of its own. Models with a
            recurrent state run their continuations one at a time, unpadded, either way.
        rows: Rows a packed forward pass uses; by default the number that holds the least memory (`_pack_rows`).
    """
    _check_continuations(continuations)
    if prefix.recurrent:  # one at a time: padding or packing would run through the recurrent state
        batch_size, pack = 1, False
    pack = pack and packing_refusal(model) is None
    keep_indices = _takes_logits_to_keep(model)
    outputs = []
    for start in range(0, len(continuations), batch_size):
        chunk = continuations[start : start + batch_size]
        if not pack:
            inputs, rows = _padded_batch(prefix, chunk, left_padded=True)
            logits = model(**_on_prefix(prefix, inputs, rows), use_cache=True, logits_to_keep=1).logits
            outputs.append(logits[:, -1])
            continue
        used = min(rows, len(chunk)) if rows else _pack_rows(prefix, [len(ids) for ids in chunk])
        inputs, places = _packed_batch(prefix, chunk, model.dtype, used)
        ends = sorted({end - 1 for _, _, end in places})  # the last column of every slot, the same in every row
        kwargs = {"logits_to_keep": torch.tensor(ends, device=prefix.last_logits.device)} if keep_indices else {}
        logits = model(**_on_prefix(prefix, inputs, used), use_cache=True, **kwargs).logits
        kept = {column: j for j, column in enumerate(ends)} if logits.shape[1] == len(ends) else None
        row_index = [row for row, _, _ in places]
        column_index = [kept[end - 1] if kept else end - 1 for _, _, end in places]  # some models keep every position
        outputs.append(logits[row_index, column_index])
    return torch.cat(outputs)
