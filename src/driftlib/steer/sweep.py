"""Lambda sweeps that compute the shared, unsteered part of the forward pass once.

A steering sweep evaluates the same texts at several strengths ``lambda`` with a steering operator
(``add``: ``h_l <- h_l + lambda * v_l``) applied to the outputs of the injection blocks (see
:mod:`driftlib.steer.hooks`; every operator acts on each position alone). Blocks below the first injection block ``k`` do not see the vector, so
their output is the same for every lambda. :func:`sweep_hidden_states` therefore runs, per batch:

1. **prefix** (once): the model up to the output of block ``k - 1``, which is kept on the device
   (``[b, t, d]`` in the model's dtype), then the forward pass is stopped;
2. **suffix** (once per lambda): the model's own forward again, under :func:`driftlib.steer.hooks.steer`,
   with blocks ``0..k-1`` temporarily replaced by passthrough modules (:func:`replay_prefix`): the
   first returns the cached state, in the original block's return type (a tensor, or a tuple for
   families such as Falcon), the others hand it on. Embedding lookup, mask and position-embedding
   construction still run (cheap), so every model family's forward keeps its own semantics (masks,
   RoPE, sliding windows, per-layer attention types); blocks ``k..`` run for real and the pass stops
   right after the deepest measurement block. The original blocks are restored in a ``finally``.

The alternative, stacking the lambdas into the batch dimension of one suffix pass
(:func:`~driftlib.steer.hooks.steer_rows`), was not taken here: it multiplies the suffix's peak
memory by ``len(lambdas)`` and gains little on a CPU (a forward pass of the tiny llama costs 19.2 ms
per 64 rows of 22 tokens at 64 rows and 14.8 ms at 256), and on a GPU the same effect is had by
raising ``batch_size``. Greedy generation is different: small batches are bound by the per-step
cost of ``generate()``, so the capability cost stacks its runs
(:func:`driftlib.steer.capability.greedy_runs`). With the
replay, one batch's work is ``k + len(lambdas) * (deepest - k + 1)`` blocks instead of
``len(lambdas) * (deepest + 1)``; e.g. 30 blocks, injection from block 22, measurement at 29 and
5 lambdas: 62 block passes instead of 150.

The batches are the same as :func:`driftlib.model.forward.extract_hidden_states` builds (longest text
first, left padding, position ids counted from each text's first real token), so a sweep gives the
same numbers, to float tolerance, as extracting independently under ``steer`` for each lambda.

:func:`random_like` makes the control every sweep runs beside the real vectors: random directions
with the same per-layer norms.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from driftlib.core.errors import ConfigError, DataError, ModelError
from driftlib.core.layerspec import LayerSpec, resolve_layers
from driftlib.model.forward import (
    FLUSH_BATCHES,
    TRUNCATION_SIDES,
    Batch,
    BatchRunner,
    StopForward,
    block_hidden_states,
    block_hooks,
    build_batch,
    check_tokens_per_batch,
    compiled_blocks,
    input_device,
    left_pad,
    named_forward_args,
    packing_works,
    pad_token_id,
    raise_non_finite,
    run_batches,
    tokenise,
)
from driftlib.model.layers import find_decoder_layers, hidden_size
from driftlib.model.pooling import POOLING_METHODS, PoolingMethod
from driftlib.stats.selection import check_lambdas
from driftlib.steer.hooks import steer
from driftlib.steer.spec import SteeringSpec, as_spec

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# the prefix cache: record block k-1's output once, replay from it


class _Passthrough(torch.nn.Module):
    """Stands in for a decoder block during a replay.

    ``forward(hidden_states, *args, **kwargs)`` returns ``cached`` (when given) or its own input
    ``hidden_states``, wrapped as ``(state, *rest)`` when the original block returned a tuple
    (``rest`` is that tuple's tail as recorded in the prefix pass). Attributes it does not have
    (``attention_type``, ``layer_idx``, ...) are read from the original block, which is not
    registered as a submodule (so parameters are not listed twice).
    """

    def __init__(self, original: torch.nn.Module, cached: torch.Tensor | None, rest: tuple[Any, ...] | None) -> None:
        super().__init__()
        object.__setattr__(self, "_original", original)
        object.__setattr__(self, "_cached", cached)
        object.__setattr__(self, "_rest", rest)

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> object:  # noqa: D102
        state = hidden_states
        cached = self._cached
        if cached is not None:
            if tuple(hidden_states.shape) != tuple(cached.shape):
                raise ModelError(
                    f"replay: the cached block output has shape {tuple(cached.shape)} but this forward pass "
                    f"carries {tuple(hidden_states.shape)}; the replayed batch must be the batch that was cached"
                )
            state = cached
        if self._rest is None:
            return state
        return (state, *self._rest)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "_original"), name)


@contextmanager
def replay_prefix(model: torch.nn.Module, first_block: int, output: object) -> Iterator[None]:
    """Make the model's forward start at block ``first_block`` from a recorded state.

    Args:
        model: the model whose blocks :func:`~driftlib.model.layers.find_decoder_layers` finds.
        first_block: ``k``, the first block that runs for real (``0`` replays nothing).
        output: the recorded output of block ``k - 1`` for the batch about to be run: a tensor
            ``[b, t, d]`` or the block's tuple (element 0 the hidden states). Ignored when ``k == 0``.

    While the context is open, blocks ``0..k-1`` are :class:`_Passthrough` modules: block 0 returns
    the recorded state, in the recorded return type, and blocks ``1..k-1`` hand it on. Forward
    passes inside the context must use the same input shape (checked). The original blocks are put
    back on exit, also when the body raises.
    """
    blocks = find_decoder_layers(model)
    if not 0 <= first_block < len(blocks):
        raise ConfigError(f"replay: first block {first_block} is outside 0..{len(blocks) - 1}")
    if first_block == 0:
        yield
        return
    state = block_hidden_states(output)
    rest = tuple(output[1:]) if isinstance(output, (tuple, list)) else None  # type: ignore[index]
    originals = [blocks[i] for i in range(first_block)]
    try:
        for i, original in enumerate(originals):
            blocks[i] = _Passthrough(original, state if i == 0 else None, rest)
        yield
    finally:
        for i, original in enumerate(originals):
            blocks[i] = original


@contextmanager
def record_output(model: torch.nn.Module, block: int, *, stop: bool) -> Iterator[list[object]]:
    """Record block ``block``'s raw output (tensor or tuple) into the yielded list; with ``stop``,
    end the forward pass there (the caller catches :class:`StopForward`)."""
    store: list[object] = []

    def hook(module: torch.nn.Module, args: object, output: object) -> None:
        store[:] = [output]
        if stop:
            raise StopForward

    handle = find_decoder_layers(model)[block].register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


# --------------------------------------------------------------------------------------------
# shared validation and batching (also used by driftlib.steer.capability)


def check_vectors(vectors: Mapping[int, Any], n_blocks: int, hidden: int) -> dict[int, np.ndarray]:
    """Vectors keyed by resolved block index, as float32 numpy ``[d]``; ConfigError on anything odd."""
    if not isinstance(vectors, Mapping) or not vectors:
        raise ConfigError("vectors: give a non-empty mapping {block index: vector [d]}")
    out: dict[int, np.ndarray] = {}
    for key, value in vectors.items():
        if isinstance(key, bool) or not isinstance(key, numbers.Integral):
            raise ConfigError(f"vectors: key {key!r} is not an integer block index")
        layer = resolve_layers(int(key), n_blocks, key="vectors")[0]
        if layer in out:
            raise ConfigError(f"vectors: block {layer} is given twice (keys {key!r} and another one for the same block)")
        array = value.detach().cpu().float().numpy() if isinstance(value, torch.Tensor) else np.asarray(value, dtype=np.float32)
        if array.shape != (hidden,):
            raise ConfigError(f"vectors: the vector for block {layer} has shape {array.shape}; the model's hidden size is {hidden}")
        if not np.isfinite(array).all():
            raise ConfigError(f"vectors: the vector for block {layer} holds NaN/Inf")
        out[layer] = array.astype(np.float32, copy=False)
    return dict(sorted(out.items()))


def check_common(batch_size: int, max_length: int | None, truncation_side: str) -> None:
    if truncation_side not in TRUNCATION_SIDES:
        raise ConfigError(f"truncation_side: {truncation_side!r}; use 'left' (keeps the end of a text) or 'right'")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size: {batch_size!r}; use a positive integer")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise ConfigError(f"max_length: {max_length!r}; use a positive integer (or null for no truncation)")


def check_texts(texts: Sequence[str], what: str = "texts") -> list[str]:
    if isinstance(texts, str):
        raise DataError(f"{what}: got one string; pass a sequence of texts")
    texts = list(texts)
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"{what}: row {row} is {type(text).__name__}, not a string")
    return texts


def display_name(model: torch.nn.Module, model_name: str | None) -> str:
    return model_name or getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__


class TextBatches:
    """Tokenised texts and the model inputs of a batch, built as extract_hidden_states builds them."""

    def __init__(self, model: torch.nn.Module, tokenizer: object, texts: list[str], max_length: int | None,
                 truncation_side: str, what: str = "texts") -> None:
        self.ids = tokenise(tokenizer, texts, max_length, truncation_side) if texts else []
        empty = [row for row, seq in enumerate(self.ids) if not seq]
        if empty:
            raise DataError(f"{what}: rows {empty[:20]} tokenise to no tokens (empty texts?); drop them first")
        #: longest first (an out-of-memory shows at once), ties in text order
        self.order = sorted(range(len(texts)), key=lambda row: (-len(self.ids[row]), row))
        self.pad_id = pad_token_id(tokenizer)
        self.device = input_device(model)
        self.named_args = named_forward_args(model)

    def inputs(self, rows: list[int]) -> tuple[dict[str, object], torch.Tensor]:
        """Forward kwargs for ``rows`` (left-padded ``input_ids``/``attention_mask`` ``[b, t]`` on the
        device, mask-based ``position_ids``, ``use_cache=False``) and the mask."""
        input_ids, mask = left_pad([self.ids[row] for row in rows], self.pad_id)
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        kwargs: dict[str, object] = {"input_ids": input_ids, "attention_mask": mask}
        if "position_ids" in self.named_args:
            kwargs["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0)
        if "use_cache" in self.named_args:
            kwargs["use_cache"] = False
        return kwargs, mask


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def _run_stopping(model: torch.nn.Module, kwargs: dict[str, object]) -> None:
    try:
        model(**kwargs)
    except StopForward:
        pass


# --------------------------------------------------------------------------------------------
# the sweep


def sweep_hidden_states(
    model: torch.nn.Module,
    tokenizer: object,
    texts: Sequence[str],
    steering: SteeringSpec | Mapping[int, Any],
    lambdas: Sequence[float],
    measure_layers: LayerSpec,
    *,
    pooling: PoolingMethod = "mean",
    skip_first: bool = True,
    batch_size: int = 16,
    max_length: int | None = 256,
    truncation_side: str = "left",
    progress: bool = True,
    model_name: str | None = None,
    tokens_per_batch: int | None = None,
    packing: bool = False,
    compile: bool = False,
) -> np.ndarray:
    """Pooled block outputs of ``texts`` steered by ``steering`` (``add``: ``h_l <- h_l + lambda * v_l``), for every lambda.

    Args:
        model: a causal LM (or bare base model) whose blocks :func:`~driftlib.model.layers.find_decoder_layers` finds.
        tokenizer: its tokenizer (not modified).
        texts: ``n`` strings.
        steering: a bound :class:`~driftlib.steer.spec.SteeringSpec` (its vectors at the injection
            blocks, operator and options; its own λ is ignored), or ``{injection block: vector [d]}``
            (numpy or torch; negative indices count from the end) with the default options.
        lambdas: the steering strengths, in the order of the result's axis 0.
        measure_layers: blocks to read (indices or relative depths, resolved by
            :func:`~driftlib.core.layerspec.resolve_layers`: axis 2 follows the resolved, sorted order). Every
            one must lie strictly after the deepest injection block.
        pooling, skip_first, batch_size, max_length, truncation_side: as in
            :func:`driftlib.model.forward.extract_hidden_states`.
        progress: a tqdm bar over texts.
        model_name: named in errors and on the bar.
        tokens_per_batch, packing: as in :func:`driftlib.model.forward.extract_hidden_states`.
            Packing is not used with a ``start_position`` or a gated operator (both act per
            padded row), which keep padded batches.
        compile: run the blocks through ``torch.compile``, as in
            :func:`driftlib.model.forward.extract_hidden_states` (the steering hooks stay eager).

    Returns:
        ``np.ndarray [len(lambdas), n, len(measure_layers), d]`` float32; ``[j, i]`` belongs to
        ``lambdas[j]`` and ``texts[i]``. Equal, to float tolerance, to
        ``extract_hidden_states(...)`` run under ``steer(model, steering, lambdas[j])`` for each ``j``.

    Raises:
        ConfigError: a measurement block at or before an injection block (a vector added at block
            ``l`` shifts every token of that block's output alike, and the separation statistics are
            shift-invariant, so steering is invisible there), bad lambdas, vectors or options.
        DataError: texts that are not strings or tokenise to nothing.
        ModelError: out of memory at batch size 1; blocks that cannot be found or read.
        NumericsError: NaN/Inf in the pooled states.
    """
    if pooling not in POOLING_METHODS:
        raise ConfigError(f"pooling: {pooling!r} is not a pooling method; use one of {', '.join(POOLING_METHODS)}")
    check_common(batch_size, max_length, truncation_side)
    check_tokens_per_batch(tokens_per_batch)
    texts = check_texts(texts)
    lams = check_lambdas(lambdas)
    blocks = find_decoder_layers(model)
    n_blocks = len(blocks)
    hidden = hidden_size(model)
    spec = as_spec(steering)
    vecs = check_vectors(spec.vectors, n_blocks, hidden)
    spec = spec.with_vectors(vecs)
    measure = resolve_layers(measure_layers, n_blocks, key="measure_layers")
    # the blocks below the first one the spec reads (a condition) or steers run once per batch
    first, last_injection = spec.first_block, max(vecs)
    too_early = [layer for layer in measure if layer <= last_injection]
    if too_early:
        raise ConfigError(
            f"measure_layers: block(s) {too_early} do not lie after the injection block(s) {sorted(vecs)}: "
            "steering is invisible there (the vector shifts every token of the block where it is added alike, "
            f"and both separation metrics are shift-invariant); measure at a block after {last_injection}"
        )
    deepest = measure[-1]
    name = display_name(model, model_name)
    n = len(texts)
    if n == 0:
        return np.empty((len(lams), 0, len(measure), hidden), dtype=np.float32)

    batches = TextBatches(model, tokenizer, texts, max_length, truncation_side)
    logger.info(
        "sweeping %d lambdas on %s: injection blocks %s, measurement blocks %s, prefix 0..%d computed once per batch",
        len(lams), name, sorted(vecs), measure, first - 1,
    )
    # packed rows hold several texts: fine for operators acting on each position alone, not for
    # steering that picks rows (a gate) or absolute columns (start_position)
    may_pack = bool(packing) and not spec.gated and spec.start_position is None

    pooled: dict[int, torch.Tensor] = {}
    batch_now: list[Batch] = []

    def on_output(layer: int, state: torch.Tensor) -> None:
        pooled[layer] = batch_now[0].pool(state, pooling)

    def run_batch(rows: list[list[int]]) -> tuple[list[int], torch.Tensor]:
        batch = build_batch(batches.ids, rows, batches.pad_id, packed=runner.packing, skip_first=skip_first,
                            width=runner.width if compile else None)
        batch_now[:] = [batch.to(batches.device)]
        kwargs = batch_now[0].forward_kwargs(batches.named_args)
        cached: object = None
        results = []
        try:
            if first > 0:
                with record_output(model, first - 1, stop=True) as store:
                    _run_stopping(model, kwargs)
                if not store:
                    raise ModelError(f"the forward pass of {name} finished without running decoder block {first - 1}")
                cached = store[0]
            for lam in lams:
                pooled.clear()
                with (
                    steer(model, spec, lam),
                    replay_prefix(model, first, cached),
                    block_hooks(model, measure, on_output, stop_after=deepest),
                ):
                    _run_stopping(model, kwargs)
                missing = [layer for layer in measure if layer not in pooled]
                if missing:
                    raise ModelError(f"the forward pass of {name} finished without running decoder block(s) {missing}")
                results.append(torch.stack([pooled[layer] for layer in measure], dim=1))  # [b, M, d]
        finally:
            batch_now.clear()
            pooled.clear()
        return batch.texts, torch.stack(results)  # [J, b, M, d]

    out = np.empty((len(lams), n, len(measure), hidden), dtype=np.float32)
    pending: list[tuple[list[int], torch.Tensor]] = []  # pooled batches not yet copied to the CPU

    def flush() -> None:
        """Copy the pending batches to ``out`` (one device synchronisation) and check them."""
        if not pending:
            return
        rows = [row for batch_rows, _ in pending for row in batch_rows]
        states = torch.cat([block for _, block in pending], dim=1).to("cpu", torch.float32).numpy()  # [J, b, M, d]
        pending.clear()
        for j in range(len(lams)):
            bad = ~np.isfinite(states[j]).all(axis=2)
            if bad.any():
                raise_non_finite(bad, rows, measure, f"{name} at lambda {lams[j]}", model)
        out[:, rows] = states

    with (
        eval_mode(model),
        torch.inference_mode(),
        tqdm(total=n, desc=f"lambda sweep {name}", unit="text", disable=not progress, leave=False) as bar,
    ):
        runner = BatchRunner([len(seq) for seq in batches.ids], batches.order, batch_size=batch_size,
                             tokens_per_batch=tokens_per_batch,
                             packing=may_pack and packing_works(model, deepest, batches.named_args))
        with compiled_blocks(model, range(deepest + 1)) if compile else nullcontext():
            try:
                for texts_done, states in run_batches(runner, run_batch, what=f"sweeping {name}"):
                    pending.append((texts_done, states))
                    if len(pending) >= FLUSH_BATCHES:
                        flush()
                    bar.update(len(texts_done))
                flush()
            finally:
                pending.clear()
    return out


def random_like(vectors: Mapping[int, Any], seed: int) -> dict[int, np.ndarray]:
    """Random directions with the same per-layer norms: the control every sweep runs.

    Args:
        vectors: ``{block: vector [d]}`` (numpy or torch).
        seed: seeds one numpy generator; layers are drawn in sorted key order, so the same keys,
            sizes and seed give the same vectors.

    Returns:
        ``{block: float32 [d]}`` with the same keys: isotropic Gaussian directions, each scaled to
        ``||vectors[block]||`` (a zero vector stays zero). The directions of different layers are
        independent.
    """
    if not isinstance(vectors, Mapping):
        raise ConfigError("vectors: give a mapping {block index: vector [d]}")
    rng = np.random.default_rng(seed)
    out: dict[int, np.ndarray] = {}
    for key in sorted(vectors):
        value = vectors[key]
        array = value.detach().cpu().double().numpy() if isinstance(value, torch.Tensor) else np.asarray(value, dtype=np.float64)
        if array.ndim != 1:
            raise ConfigError(f"vectors: the vector for block {key} has shape {array.shape}; expected [d]")
        norm = float(np.linalg.norm(array))
        direction = rng.standard_normal(array.shape[0])
        direction /= np.linalg.norm(direction)
        out[key] = (direction * norm).astype(np.float32)
    return out
