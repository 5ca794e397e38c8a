"""Steering a model: apply a steering operator (``add``: ``h + lam * v_l``) to the output of decoder
block ``l``, through forward hooks.

There is one way to steer, the :func:`steer` context manager, given a
:class:`~driftlib.steer.spec.SteeringSpec` (or, by hand, ``{block: v}`` and a λ)::

    with steer(model, spec.with_lam(4.0)):
        out = model.generate(**batch, max_new_tokens=32)
    with steer(model, {12: v12, 14: v14}, lam=4.0):
        ...

:func:`steer_rows` applies the same steering to groups of rows of one batch, each group under its
own spec and λ (one ``generate()`` call for many runs of a sweep); both install the same hooks.

"Layer ``l``" is the output of decoder block ``l`` (0-based), the same layer that
:mod:`driftlib.model.forward` reads (see :mod:`driftlib.model.layers`): the vector is added to the hidden
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from driftlib.core.errors import ConfigError, ModelError
from driftlib.model.forward import block_hidden_states
from driftlib.model.layers import find_decoder_layers, hidden_size
from driftlib.model.pooling import last_token_index
from driftlib.steer.operators import operator_named
from driftlib.steer.spec import SteeringSpec, as_spec

logger = logging.getLogger(__name__)

__all__ = ["steer", "steer_rows"]


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


class _Gate:
    """Which sequences a gated operator steers: decided once per prompt, on the prompt pass.

    The condition block's output at the prompt's last real token is projected on the condition's
    direction; the sequence is steered when the score passes the threshold. The decision is taken
    on the first forward pass of a batch (no cache) and kept for every later pass of the same
    sequences: with the KV cache (later passes have cached tokens) and without it (a later pass
    re-runs the prompt plus the tokens generated so far, recognised by its unchanged prefix), so
    cached and uncached generation steer the same sequences. ``rows`` (a slice of the batch, or
    None for all of it) are the sequences this gate decides for (:func:`steer_rows`).
    """

    def __init__(self, spec: SteeringSpec, n_blocks: int, first_injection: int, size: int | None,
                 rows: slice | None = None) -> None:
        condition = spec.condition
        if condition is None:
            raise ConfigError(f"steer: the {spec.operator!r} operator needs a condition (a direction and a "
                              "threshold fitted on calibration prompts; see driftlib.stats.condition)")
        self.layer = int(condition.layer) % n_blocks
        if self.layer > first_injection:
            raise ConfigError(f"steer: the condition layer {self.layer} lies after the first injection block "
                              f"{first_injection}; the condition must be read before anything is steered")
        self.direction = _as_vector(self.layer, condition.direction, size)
        self.threshold = float(condition.threshold)
        self.slice = slice(None) if rows is None else rows
        self.cast: dict[torch.device, torch.Tensor] = {}
        self.decide = False
        self.prompt_ids: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None
        self.passes: torch.Tensor | None = None

    def on_pass(self, past: int, kwargs: dict[str, object]) -> None:
        """Before each forward pass: is this a new batch of prompts, whose gate must be decided?"""
        if past > 0:
            self.decide = False
            return
        ids = kwargs.get("input_ids")
        mask = kwargs.get("attention_mask")
        ids = ids[self.slice] if isinstance(ids, torch.Tensor) else None
        prev = self.prompt_ids
        same = (ids is not None and prev is not None and ids.shape[0] == prev.shape[0]
                and ids.shape[-1] >= prev.shape[-1] and bool(torch.equal(ids[:, : prev.shape[-1]], prev)))
        self.decide = not same
        if self.decide:
            self.prompt_ids = ids.detach().clone() if ids is not None else None
            self.mask = mask[self.slice] if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None

    def on_condition_output(self, module: torch.nn.Module, args: object, output: object) -> None:
        if not self.decide:
            return
        hidden = block_hidden_states(output)[self.slice]  # [b, t, d]
        if self.mask is not None and self.mask.shape[-1] == hidden.shape[-2]:
            last = last_token_index(self.mask.to(hidden.device))
        else:
            last = torch.full((hidden.shape[0],), hidden.shape[-2] - 1, device=hidden.device)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
        direction = self.cast.get(hidden.device)
        if direction is None:
            direction = self.cast[hidden.device] = self.direction.to(hidden.device)
        self.passes = pooled @ direction > self.threshold  # [b]
        self.decide = False

    def rows(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[b, 1, 1]`` bools: the sequences of this block output that are steered."""
        if self.passes is None or self.passes.shape[0] != hidden.shape[0]:
            raise ModelError("steer: the condition block did not run before an injection block in this pass; "
                             "conditional steering needs the forward pass to read the condition first")
        return self.passes.to(hidden.device).view(-1, *([1] * (hidden.dim() - 1)))


class _Run:
    """One spec's steering of some rows of the batch (all of them for :func:`steer`): its operator's
    float32 tensors per block, cast once per (dtype, device), its gate and its options."""

    def __init__(self, spec: SteeringSpec, n_blocks: int, size: int | None, rows: slice | None) -> None:
        if not spec.vectors:
            raise ConfigError("steer: give at least one {layer: vector} pair")
        self.operator = operator_named(spec.operator)
        self.start_position, self.preserve_norm = spec.start_position, spec.preserve_norm
        self.rows = rows
        self.lam, self.name = spec.lam, spec.operator
        self.prepared: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in spec.vectors.items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
                raise ConfigError(f"steer: layer {key!r} is not an integer block index")
            if not -n_blocks <= int(key) < n_blocks:
                raise ConfigError(f"steer: layer {key} is out of range; the model has {n_blocks} decoder blocks")
            layer = int(key) % n_blocks
            if layer in self.prepared:
                raise ConfigError(f"steer: layer {layer} is given twice (as {key})")
            self.prepared[layer] = self.operator.prepare(_as_vector(layer, value, size), spec.lam)  # float32
        self.gate = _Gate(spec, n_blocks, min(self.prepared), size, rows) if self.operator.gated else None
        self.cast: dict[tuple[int, torch.dtype, torch.device], dict[str, torch.Tensor]] = {}

    def apply(self, layer: int, hidden: torch.Tensor, past: int) -> torch.Tensor:
        """The steered output ``[b, t, d]`` of block ``layer`` for this run's rows ``hidden``."""
        key = (layer, hidden.dtype, hidden.device)
        tensors = self.cast.get(key)
        if tensors is None:
            tensors = self.cast[key] = {k: v.to(device=hidden.device, dtype=hidden.dtype)
                                        for k, v in self.prepared[layer].items()}
        steered = self.operator.apply(hidden, tensors)
        if self.preserve_norm:
            before = torch.linalg.vector_norm(hidden.float(), dim=-1, keepdim=True)
            after = torch.linalg.vector_norm(steered.float(), dim=-1, keepdim=True)
            scale = torch.where(after > 0, before / after.clamp_min(torch.finfo(torch.float32).tiny), 1.0)
            steered = (steered.float() * scale).to(hidden.dtype)
        if self.start_position is not None:
            positions = past + torch.arange(hidden.shape[-2], device=hidden.device)
            selected = (positions >= self.start_position).view(*([1] * (hidden.dim() - 2)), -1, 1)
            steered = torch.where(selected, steered, hidden)
        if self.gate is not None:
            steered = torch.where(self.gate.rows(hidden), steered, hidden)
        return steered


@contextmanager
def _installed(model: torch.nn.Module, specs: list[tuple[SteeringSpec, slice | None]],
               n_rows: int | None) -> Iterator[None]:
    """Hooks that steer each spec's rows (None: every row, one spec) while the context is open."""
    blocks = find_decoder_layers(model)
    n_blocks, size = len(blocks), hidden_size(model)
    runs = [_Run(spec, n_blocks, size, rows) for spec, rows in specs]
    gates = [run.gate for run in runs if run.gate is not None]
    state = {"past": 0}

    def on_owner_call(module: torch.nn.Module, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
        state["past"] = _past_length(args, kwargs)
        for gate in gates:
            gate.on_pass(state["past"], kwargs)

    def make_hook(layer: int) -> Callable[..., object]:
        mine = [run for run in runs if layer in run.prepared]

        def hook(module: torch.nn.Module, args: object, output: object) -> object:
            hidden = block_hidden_states(output)  # [b, t, d]
            if n_rows is None:  # steer(): one spec, every row
                return _replace_hidden(output, mine[0].apply(layer, hidden, state["past"]))
            if hidden.shape[0] != n_rows:
                raise ModelError(f"steer_rows: the batch has {hidden.shape[0]} rows, the runs stacked in it "
                                 f"{n_rows}")
            steered = hidden.clone()
            for run in mine:
                steered[run.rows] = run.apply(layer, hidden[run.rows], state["past"])
            return _replace_hidden(output, steered)

        return hook

    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        if gates or any(run.start_position is not None for run in runs):
            owner = _blocks_owner(model, blocks)
            handles.append(owner.register_forward_pre_hook(on_owner_call, with_kwargs=True))
        for gate in gates:  # registered first: they read the block's output before any steering
            handles.append(blocks[gate.layer].register_forward_hook(gate.on_condition_output))
        layers = sorted({layer for run in runs for layer in run.prepared})
        for layer in layers:
            handles.append(blocks[layer].register_forward_hook(make_hook(layer)))
        logger.debug("steering layers %s: %s", layers,
                     ", ".join(f"{run.name} lam={run.lam:g}" for run in runs))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def steer(
    model: torch.nn.Module,
    steering: SteeringSpec | Mapping[int, torch.Tensor | np.ndarray],
    lam: float | None = None,
    **options: Any,
) -> Iterator[None]:
    """Steer the outputs of the spec's decoder blocks with its operator while the context is open.

    Args:
        model: a causal LM or bare base model whose blocks
            :func:`~driftlib.model.layers.find_decoder_layers` finds.
        steering: a bound :class:`~driftlib.steer.spec.SteeringSpec` (its vectors, λ, operator,
            norm preservation and positions), or for use by hand ``{block index: v [d]}`` (torch or
            numpy, any float dtype) with the default options; a negative index counts from the last
            block. ``d`` must be the model's hidden size.
        lam: the strength λ, overriding the spec's (``0`` leaves every output bit-identical).
        **options: other :class:`~driftlib.steer.spec.SteeringSpec` fields to override, e.g.
            ``start_position`` (steer only tokens whose absolute position, see the module docstring,
            is ``>= start_position``) or ``preserve_norm`` (rescale each steered token to its
            pre-steering norm, ``h' = f(h)·‖h‖/‖f(h)‖``, norms in float32, so steering changes
            directions only).

    With the ``add`` operator a block's output becomes ``h + λ·v``; the other operators are in
    :mod:`driftlib.steer.operators`. A gated operator (``conditional``) steers only the sequences
    whose prompt passes the spec's condition (see ``_Gate``). Works for plain forward passes
    and ``generate()`` with or without the KV cache, on left-padded batches, for blocks that return
    a tensor or a tuple (element 0 replaced, the rest kept). The operator's tensors are cast once
    per (dtype, device) that a block's output has, so a bfloat16 model stays bfloat16 and a model
    split across devices gets them on each block's device. The outputs are new tensors (nothing is
    modified in place). Hooks are removed on exit, also on an exception.

    Raises:
        ConfigError: no vectors, a layer out of range or given twice, a vector that is not
            ``[hidden size]`` or holds NaN/Inf, a non-finite λ, a negative ``start_position``, an
            unknown operator.
        ModelError: the blocks cannot be found, or return something other than a tensor/tuple.
    """
    spec = replace(as_spec(steering, lam), **options) if options else as_spec(steering, lam)
    with _installed(model, [(spec, None)], None):
        yield


@contextmanager
def steer_rows(model: torch.nn.Module, specs: Sequence[SteeringSpec | None], rows: int) -> Iterator[None]:
    """Steer a batch that stacks ``len(specs)`` groups of ``rows`` sequences, group ``i`` (batch rows
    ``i*rows .. (i+1)*rows - 1``) under ``specs[i]`` at its own λ, while the context is open.

    Each group is steered exactly as :func:`steer` steers a batch of its rows alone (operator,
    options, positions, and for a gated operator a gate decided on that group's prompts); a group
    whose spec is None or has λ = 0 passes through unchanged. Stacking the runs of a sweep into the
    batch dimension lets one ``generate()`` call serve many (spec, λ) runs: greedy decoding is
    bound by per-step overhead at small batches (:func:`driftlib.steer.capability.greedy_runs`).

    Args:
        model: as for :func:`steer`.
        specs: one bound spec (or None) per group, in batch order.
        rows: sequences per group; every forward pass inside the context must carry
            ``len(specs) * rows`` of them.

    Raises:
        ConfigError: as :func:`steer`, for any spec; ``rows`` not a positive integer.
        ModelError: as :func:`steer`, and a forward pass whose batch is not ``len(specs) * rows``.
    """
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ConfigError(f"steer_rows: rows {rows!r}; use a positive integer")
    groups = [(as_spec(spec), slice(i * rows, (i + 1) * rows)) for i, spec in enumerate(specs)
              if spec is not None and as_spec(spec).lam != 0.0]
    if not groups:
        yield
        return
    with _installed(model, groups, len(specs) * rows):
        yield
