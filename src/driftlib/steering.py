"""Steering a model: add ``lam * v_l`` to the output of decoder block ``l``, through forward hooks.

There is one way to steer, the :func:`steer` context manager::

    with steer(model, {12: v12, 14: v14}, lam=4.0):
        out = model.generate(**batch, max_new_tokens=32)

"Layer ``l``" is the output of decoder block ``l`` (0-based), the same layer that
:mod:`driftlib.activations` reads (see :mod:`driftlib.layers`): the vector is added to the hidden
states block ``l`` returns, so block ``l + 1`` is the first to see it. Adding the same vector to
every token leaves shift-invariant statistics at layer ``l`` itself unchanged (design.md): measure
after the injection layer.

Positions (``start_position``)
    A token's *position* is its absolute index in the sequence being processed, counting padding
    and every token already in the KV cache: in a batch of ``input_ids [b, t]`` run with a cache
    that already holds ``P`` tokens, column ``j`` has position ``P + j`` in every row. So with a
    left-padded batch the positions are the column indices of the padded ``input_ids`` (a short
    prompt's first real token sits at a position > 0), and in ``generate()`` the ``k``-th new token
    (0-based) has position ``t_prompt + k`` where ``t_prompt`` is the padded prompt length, with
    the KV cache (one token per forward pass, ``P`` = tokens cached) and without it (the whole
    sequence re-run, ``P = 0``) alike. ``start_position=t_prompt`` therefore steers only generated
    tokens; ``start_position=None`` (default) steers every position, padding included (padding
    never influences real tokens, as the attention mask hides it).

    ``P`` is read, once per forward pass, from the cache handed to the module that owns the decoder
    blocks (``cache`` or ``past_key_values`` keyword: ``Cache.get_seq_length()``, or the key length
    of a legacy tuple cache); without a cache ``P = 0``. Position ids are deliberately *not* used:
    ``generate()`` derives them from the attention mask (real-token counts per row), so they differ
    between rows of a left-padded batch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import torch

from driftlib.activations import block_hidden_states
from driftlib.errors import ConfigError, ModelError
from driftlib.layers import find_decoder_layers

logger = logging.getLogger(__name__)

__all__ = ["steer"]


def _hidden_size(model: torch.nn.Module) -> int | None:
    size = getattr(getattr(model, "config", None), "hidden_size", None)
    if isinstance(size, int):
        return size
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    dim = getattr(embeddings, "embedding_dim", None)
    return int(dim) if isinstance(dim, int) else None


def _blocks_owner(model: torch.nn.Module, blocks: torch.nn.ModuleList) -> torch.nn.Module:
    """The module that holds the decoder-block list as a direct child (``LlamaModel``, ``GPT2Model``, …)."""
    for module in model.modules():
        if any(child is blocks for child in module.children()):
            return module
    return model


def _past_length(args: tuple[object, ...], kwargs: dict[str, object]) -> int:
    """Tokens already in the KV cache handed to a forward call (0 without a cache)."""
    cache = kwargs.get("cache")
    if cache is None:
        cache = kwargs.get("past_key_values")
    if cache is None:
        return 0
    get_seq_length = getattr(cache, "get_seq_length", None)
    if callable(get_seq_length):
        return int(get_seq_length())
    if isinstance(cache, (tuple, list)) and cache and isinstance(cache[0], (tuple, list)) and cache[0]:
        keys = cache[0][0]
        if isinstance(keys, torch.Tensor):
            return int(keys.shape[-2])  # legacy [b, heads, past, head_dim]
    raise ModelError(
        f"steer(start_position=...): cannot tell how many tokens the cache of type {type(cache).__name__} holds "
        "(no get_seq_length()); steer without start_position or use a transformers Cache"
    )


def _as_vector(layer: int, value: object, size: int | None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        vec = value.detach().to("cpu", torch.float32)
    elif isinstance(value, np.ndarray) or isinstance(value, (list, tuple)):
        vec = torch.from_numpy(np.asarray(value, dtype=np.float32).copy())
    else:
        raise ConfigError(f"steering vector for layer {layer} is a {type(value).__name__}; give a torch tensor or numpy array [d]")
    if vec.dim() != 1:
        raise ConfigError(f"steering vector for layer {layer} has shape {tuple(vec.shape)}; expected one vector [d]")
    if size is not None and vec.shape[0] != size:
        raise ConfigError(
            f"steering vector for layer {layer} has {vec.shape[0]} entries but the model's hidden size is {size}; "
            "was it computed for another model? (vectors cross architectures only through a map)"
        )
    if not bool(torch.isfinite(vec).all()):
        raise ConfigError(f"steering vector for layer {layer} holds NaN or Inf")
    return vec


def _replace_hidden(output: object, hidden: torch.Tensor) -> object:
    if isinstance(output, torch.Tensor):
        return hidden
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    if isinstance(output, list):
        return [hidden, *output[1:]]
    raise ModelError(
        f"a decoder block returned {type(output).__name__}, not a tensor or a tuple starting with one; "
        "driftlib cannot steer this architecture"
    )


@contextmanager
def steer(
    model: torch.nn.Module,
    vectors: Mapping[int, torch.Tensor | np.ndarray],
    lam: float = 1.0,
    *,
    start_position: int | None = None,
    preserve_norm: bool = False,
) -> Iterator[None]:
    """Add ``lam * vectors[l]`` to the output hidden states of decoder block ``l`` while the context is open.

    Args:
        model: a causal LM or bare base model whose blocks :func:`~driftlib.layers.find_decoder_layers` finds.
        vectors: ``{block index: v [d]}`` (torch or numpy, any float dtype); a negative index counts
            from the last block. ``d`` must be the model's hidden size.
        lam: the steering strength λ (``0`` leaves every output bit-identical).
        start_position: steer only tokens whose absolute position (see the module docstring:
            column index in the padded sequence, plus the tokens already cached) is
            ``>= start_position``; ``None`` steers every position.
        preserve_norm: rescale each steered token to its pre-steering norm, ``h' = (h + λv)·‖h‖/‖h + λv‖``
            (norms taken in float32), so steering changes directions only.

    Works for plain forward passes and ``generate()`` with or without the KV cache, on left-padded
    batches, for blocks that return a tensor or a tuple (element 0 replaced, the rest kept). The
    vector is cast once per (dtype, device) that a block's output has, so a bfloat16 model stays
    bfloat16 and a model split across devices gets the vector on each block's device. The outputs
    are new tensors (nothing is modified in place). Hooks are removed on exit, also on an exception.

    Raises:
        ConfigError: an empty mapping, a layer out of range or given twice, a vector that is not
            ``[hidden size]`` or holds NaN/Inf, a non-finite ``lam``, a negative ``start_position``.
        ModelError: the blocks cannot be found, or return something other than a tensor/tuple.
    """
    blocks = find_decoder_layers(model)
    n_blocks = len(blocks)
    if not isinstance(vectors, Mapping) or not vectors:
        raise ConfigError("steer: give at least one {layer: vector} pair")
    if isinstance(lam, bool) or not isinstance(lam, (int, float, np.floating, np.integer)) or not math.isfinite(float(lam)):
        raise ConfigError(f"steer: lam={lam!r}; use a finite number")
    lam = float(lam)
    if start_position is not None and (
        isinstance(start_position, bool) or not isinstance(start_position, (int, np.integer)) or start_position < 0
    ):
        raise ConfigError(f"steer: start_position={start_position!r}; use a non-negative integer or None")
    size = _hidden_size(model)

    deltas: dict[int, torch.Tensor] = {}
    for key, value in vectors.items():
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
            raise ConfigError(f"steer: layer {key!r} is not an integer block index")
        if not -n_blocks <= int(key) < n_blocks:
            raise ConfigError(f"steer: layer {key} is out of range; the model has {n_blocks} decoder blocks")
        layer = int(key) % n_blocks
        if layer in deltas:
            raise ConfigError(f"steer: layer {layer} is given twice (as {key})")
        deltas[layer] = lam * _as_vector(layer, value, size)  # float32 [d]

    state = {"past": 0}

    def on_owner_call(module: torch.nn.Module, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
        state["past"] = _past_length(args, kwargs)

    def make_hook(layer: int) -> Callable[..., object]:
        delta32 = deltas[layer]
        cast: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

        def hook(module: torch.nn.Module, args: object, output: object) -> object:
            hidden = block_hidden_states(output)  # [b, t, d]
            key = (hidden.dtype, hidden.device)
            delta = cast.get(key)
            if delta is None:
                delta = cast[key] = delta32.to(device=hidden.device, dtype=hidden.dtype)
            steered = hidden + delta
            if preserve_norm:
                before = torch.linalg.vector_norm(hidden.float(), dim=-1, keepdim=True)
                after = torch.linalg.vector_norm(steered.float(), dim=-1, keepdim=True)
                scale = torch.where(after > 0, before / after.clamp_min(torch.finfo(torch.float32).tiny), 1.0)
                steered = (steered.float() * scale).to(hidden.dtype)
            if start_position is not None:
                positions = state["past"] + torch.arange(hidden.shape[-2], device=hidden.device)
                selected = (positions >= start_position).view(*([1] * (hidden.dim() - 2)), -1, 1)
                steered = torch.where(selected, steered, hidden)
            return _replace_hidden(output, steered)

        return hook

    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        if start_position is not None:
            owner = _blocks_owner(model, blocks)
            handles.append(owner.register_forward_pre_hook(on_owner_call, with_kwargs=True))
        for layer in sorted(deltas):
            handles.append(blocks[layer].register_forward_hook(make_hook(layer)))
        logger.debug("steering layers %s with lam=%g (start_position=%s, preserve_norm=%s)",
                     sorted(deltas), lam, start_position, preserve_norm)
        yield
    finally:
        for handle in handles:
            handle.remove()
