"""Reading decoder-block outputs through forward hooks, and batched, pooled hidden-state extraction.

"Layer ``l``" is the output of decoder block ``l`` (see :mod:`driftlib.model.layers`). Outputs are read
with forward hooks on the blocks, never from ``output_hidden_states`` (whose last entry is taken
after the final norm in current transformers).

:func:`extract_hidden_states` is the workhorse of every phase that needs activations. It tokenises
once, runs the texts longest first in left-padded batches, pools each requested block's output on
the device as soon as the block has run, and stops the forward pass right after the deepest
requested block (no later block, no final norm, no LM head).
"""

from __future__ import annotations

import gc
import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from tqdm.auto import tqdm

from driftlib.core.errors import ConfigError, DataError, ModelError, NumericsError
from driftlib.core.layerspec import LayerSpec, resolve_layers
from driftlib.model.layers import find_decoder_layers, hidden_size
from driftlib.model.pooling import POOLING_METHODS, PoolingMethod, pool

logger = logging.getLogger(__name__)

TRUNCATION_SIDES: tuple[str, ...] = ("left", "right")

#: pooled batches kept on the device before one copy to the CPU (and the NaN/Inf check)
_FLUSH_BATCHES = 8


class StopForward(Exception):
    """Raised from the deepest requested block's hook to end the forward pass there."""


def block_hidden_states(output: object) -> torch.Tensor:
    """The hidden states ``[b, t, d]`` in a decoder block's output.

    Blocks return a tensor (Llama, GPT-2, … in current transformers) or a tuple whose element 0 is
    the hidden states (Falcon, older transformers).
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ModelError(
        f"a decoder block returned {type(output).__name__}, not a tensor or a tuple starting with one; "
        "driftlib cannot read hidden states from this architecture"
    )


@contextmanager
def block_hooks(
    model: torch.nn.Module,
    layers: Sequence[int],
    on_output: Callable[[int, torch.Tensor], None],
    *,
    stop_after: int | None = None,
) -> Iterator[None]:
    """Call ``on_output(l, hidden [b, t, d])`` after block ``l`` runs, for every ``l`` in ``layers``.

    With ``stop_after``, that block's hook raises :class:`StopForward` once ``on_output`` returns;
    the caller catches it. Hooks are removed on exit, also on an exception.
    """
    blocks = find_decoder_layers(model)
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def make_hook(layer: int) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: object, output: object) -> None:
            on_output(layer, block_hidden_states(output))
            if layer == stop_after:
                raise StopForward

        return hook

    try:
        for layer in layers:
            handles.append(blocks[layer].register_forward_hook(make_hook(layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def record_block_outputs(model: torch.nn.Module, layers: LayerSpec) -> Iterator[dict[int, torch.Tensor]]:
    """Record the output hidden states of decoder blocks while the context is open.

    Args:
        model: a causal LM or a bare base model (blocks found by :func:`driftlib.model.layers.find_decoder_layers`).
        layers: block indices or relative depths (resolved by :func:`driftlib.core.layerspec.resolve_layers`).

    Yields:
        A dict ``{block index: hidden [b, t, d]}``, filled by every forward pass run inside the
        context (a later pass overwrites an earlier one's entry). The tensors are the blocks'
        outputs themselves, on their devices and in the model's dtype. Hooks are removed on exit,
        also when the body raises.
    """
    indices = resolve_layers(layers, len(find_decoder_layers(model)))
    store: dict[int, torch.Tensor] = {}
    with block_hooks(model, indices, store.__setitem__):
        yield store


def input_device(model: torch.nn.Module) -> torch.device:
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is not None and getattr(embeddings, "weight", None) is not None:
        return embeddings.weight.device
    return next(model.parameters()).device


def named_forward_args(model: torch.nn.Module) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def pad_token_id(tokenizer: object) -> int:
    for attribute in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attribute, None)
        if isinstance(value, list):  # some tokenizers/configs list several eos ids
            value = value[0] if value else None
        if value is not None:
            return int(value)
    # padded positions are masked out, so any id in the vocabulary would do
    logger.warning("tokenizer has no pad, eos or unk token; padding with token id 0 (masked out)")
    return 0


def tokenise(
    tokenizer: object, texts: list[str], max_length: int | None, truncation_side: str
) -> list[list[int]]:
    saved = (getattr(tokenizer, "padding_side", None), getattr(tokenizer, "truncation_side", None))
    tokenizer.padding_side = "left"  # type: ignore[attr-defined]
    tokenizer.truncation_side = truncation_side  # type: ignore[attr-defined]
    try:
        encoded = tokenizer(  # type: ignore[operator]
            texts,
            add_special_tokens=True,
            truncation=max_length is not None,
            max_length=max_length,
            padding=False,
            return_attention_mask=False,
        )
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = saved  # type: ignore[attr-defined]
    return [list(ids) for ids in encoded["input_ids"]]


def _is_id_list(value: object) -> bool:
    return isinstance(value, (list, tuple)) and all(
        isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in value
    )


def _token_ids(
    tokenizer: object, texts: list, max_length: int | None, truncation_side: str
) -> list[list[int]]:
    """Token ids per row: strings tokenised, id lists taken as they are; both truncated alike."""
    strings = [row for row, text in enumerate(texts) if isinstance(text, str)]
    out: list[list[int]] = [[] if isinstance(text, str) else [int(t) for t in text] for text in texts]
    if strings:
        for row, seq in zip(strings, tokenise(tokenizer, [texts[r] for r in strings], max_length, truncation_side)):
            out[row] = seq
    if max_length is not None:
        for row, seq in enumerate(out):
            if len(seq) > max_length:
                out[row] = seq[len(seq) - max_length :] if truncation_side == "left" else seq[:max_length]
    return out


def _tail_mask(mask: torch.Tensor, spans: list[int]) -> torch.Tensor:
    """``mask`` restricted to each row's last ``spans[i]`` positions (left padding: the right end)."""
    length = mask.shape[1]
    start = torch.tensor([length - k for k in spans], dtype=torch.long)
    return mask * (torch.arange(length)[None, :] >= start[:, None]).to(mask.dtype)


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids [b, t]`` and ``attention_mask [b, t]`` (int64), padded on the left to the longest."""
    length = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for row, seq in enumerate(seqs):
        input_ids[row, length - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, length - len(seq) :] = 1
    return input_ids, mask


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU tensor to ``device``; to CUDA through pinned memory without blocking the host.

    A plain ``.to("cuda")`` of pageable memory waits for the stream, i.e. for the previous batch to
    finish on the GPU, which would serialise host and device work batch after batch.
    """
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def free_device_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def extract_hidden_states(
    model: torch.nn.Module,
    tokenizer: object,
    texts: Sequence[str | Sequence[int]],
    layers: LayerSpec,
    *,
    pooling: PoolingMethod = "mean",
    skip_first: bool = True,
    batch_size: int = 16,
    max_length: int | None = 256,
    truncation_side: str = "left",
    progress: bool = True,
    model_name: str | None = None,
    pool_last: Sequence[int] | None = None,
) -> np.ndarray:
    """Pooled decoder-block outputs of ``texts``: ``[n, len(layers), d]`` float32, in the order of ``texts``.

    Args:
        model: a causal LM (or a bare base model) whose blocks :func:`~driftlib.model.layers.find_decoder_layers` finds.
        tokenizer: its tokenizer. Not modified: its padding and truncation sides are set for the
            tokenise call and restored; padding uses its pad token, else eos.
        texts: ``n`` strings, or token-id lists used as they are (no tokenisation, no special
            tokens added; truncated like a text). The two may be mixed.
        layers: block indices or relative depths, resolved by :func:`~driftlib.core.layerspec.resolve_layers`;
            axis 1 of the result follows the *resolved* order (sorted, unique).
        pooling: ``"mean"`` over real tokens or ``"last"`` real token (see :mod:`driftlib.model.pooling`).
        skip_first: for mean pooling, leave out each text's first real token (huge-norm position).
        batch_size: texts per forward pass; halved automatically on out-of-memory.
        max_length: tokens kept per text (``None``: no truncation).
        truncation_side: ``"left"`` keeps the end of long texts (preference transcripts differ only
            at the end, so right truncation can make chosen and rejected identical).
        progress: show a tqdm bar over texts.
        model_name: named in errors and on the progress bar.
        pool_last: per text, how many of its last tokens to pool over (``None``: all of its real
            tokens). The whole text is still run (the span attends to everything before it); only
            the pooling is restricted, e.g. to an evaluation prompt after a long context. For mean
            pooling ``skip_first`` then applies to the span's first token; pass False.

    Returns:
        ``np.ndarray [n, len(resolved layers), d]`` float32; row ``i`` belongs to ``texts[i]``.

    Raises:
        ConfigError: a bad ``pooling``, ``truncation_side``, ``batch_size``, ``max_length`` or layer.
        DataError: a text that is not a string or that tokenises to no tokens.
        ModelError: out of memory even at batch size 1, or blocks that cannot be found or read.
        NumericsError: NaN/Inf in the pooled states (names the model, layer and text rows).

    The forward pass runs under ``torch.inference_mode()`` with the model temporarily in eval mode,
    with ``use_cache=False`` and with position ids counted from each text's first real token
    (so a left-padded text gets the same positions as when run alone, also for models with
    absolute position embeddings such as GPT-2). It stops right after the deepest requested block.
    """
    if pooling not in POOLING_METHODS:
        raise ConfigError(f"pooling: {pooling!r} is not a pooling method; use one of {', '.join(POOLING_METHODS)}")
    if truncation_side not in TRUNCATION_SIDES:
        raise ConfigError(f"truncation_side: {truncation_side!r}; use 'left' (keeps the end of a text) or 'right'")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size: {batch_size!r}; use a positive integer")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise ConfigError(f"max_length: {max_length!r}; use a positive integer (or null for no truncation)")
    if isinstance(texts, str):
        raise DataError("texts: got one string; pass a sequence of texts")
    texts = list(texts)
    for row, text in enumerate(texts):
        if not isinstance(text, str) and not _is_id_list(text):
            raise DataError(f"texts: row {row} is {type(text).__name__}, not a string or a list of token ids")
    if pool_last is not None:
        pool_last = [int(k) for k in pool_last]
        if len(pool_last) != len(texts) or any(k < 1 for k in pool_last):
            raise ConfigError(f"pool_last: give one positive span length per text ({len(texts)} texts)")

    name = model_name or getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
    indices = resolve_layers(layers, len(find_decoder_layers(model)))
    deepest = indices[-1]
    n = len(texts)
    if n == 0:
        return np.empty((0, len(indices), hidden_size(model)), dtype=np.float32)

    ids = _token_ids(tokenizer, texts, max_length, truncation_side)
    if pool_last is not None:
        long = [row for row, k in enumerate(pool_last) if k > len(ids[row])]
        if long:
            raise DataError(f"pool_last: rows {long[:20]} ask for a span longer than the (truncated) text")
    empty = [row for row, seq in enumerate(ids) if not seq]
    if empty:
        raise DataError(f"texts: rows {empty[:20]} tokenise to no tokens (empty texts?); drop them before extraction")
    order = sorted(range(n), key=lambda row: (-len(ids[row]), row))  # longest first: an OOM shows at once
    pad_id = pad_token_id(tokenizer)
    device = input_device(model)
    named_args = named_forward_args(model)
    logger.info(
        "extracting %s-pooled block outputs %s of %s for %d texts (batch %d, %d-%d tokens)",
        pooling, indices, name, n, batch_size, len(ids[order[-1]]), len(ids[order[0]]),
    )

    mask_now: list[torch.Tensor] = []
    pooled: dict[int, torch.Tensor] = {}

    def on_output(layer: int, hidden: torch.Tensor) -> None:
        pooled[layer] = pool(hidden, mask_now[0], pooling, skip_first=skip_first, check=False)

    def run(rows: list[int]) -> torch.Tensor:
        input_ids, mask = left_pad([ids[row] for row in rows], pad_id)
        pool_mask = mask if pool_last is None else _tail_mask(mask, [pool_last[row] for row in rows])
        input_ids, mask, pool_mask = (_to_device(t, device) for t in (input_ids, mask, pool_mask))
        kwargs: dict[str, object] = {"input_ids": input_ids, "attention_mask": mask}
        if "position_ids" in named_args:
            kwargs["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0)
        if "use_cache" in named_args:
            kwargs["use_cache"] = False
        mask_now[:] = [pool_mask]
        pooled.clear()
        try:
            model(**kwargs)
        except StopForward:
            pass
        finally:
            mask_now.clear()
        missing = [layer for layer in indices if layer not in pooled]
        if missing:
            raise ModelError(f"the forward pass of {name} finished without running decoder block(s) {missing}")
        states = torch.stack([pooled[layer] for layer in indices], dim=1)  # [b, L, d]
        pooled.clear()
        return states

    out: np.ndarray | None = None
    pending: list[tuple[list[int], torch.Tensor]] = []  # pooled batches not yet copied to the CPU

    def flush() -> None:
        """Copy the pending pooled batches to ``out`` (one device synchronisation) and check them."""
        nonlocal out
        if not pending:
            return
        rows = [row for batch_rows, _ in pending for row in batch_rows]
        states = torch.cat([batch for _, batch in pending]).to("cpu", torch.float32).numpy()  # [b, L, d]
        pending.clear()
        bad = ~np.isfinite(states).all(axis=2)  # [b, L]
        if bad.any():
            raise_non_finite(bad, rows, indices, name, model)
        if out is None:
            out = np.empty((n, len(indices), states.shape[-1]), dtype=np.float32)
        out[rows] = states

    size = batch_size
    start = 0
    was_training = model.training
    if was_training:
        model.eval()
    try:
        with (
            block_hooks(model, indices, on_output, stop_after=deepest),
            torch.inference_mode(),
            tqdm(total=n, desc=f"hidden states {name}", unit="text", disable=not progress, leave=False) as bar,
        ):
            while start < n:
                rows = order[start : start + size]
                try:
                    states = run(rows)
                except torch.OutOfMemoryError as exc:
                    pooled.clear()
                    if size == 1:
                        raise ModelError(
                            f"out of memory running {name} on one text of {len(ids[rows[0]])} tokens "
                            f"(row {rows[0]}); lower max_length, use a smaller dtype, or use a device with more memory"
                        ) from exc
                    failed = True
                else:
                    failed = False
                if failed:  # outside the except block, so the traceback no longer pins the batch's tensors
                    free_device_memory()
                    logger.warning("out of memory at batch size %d; retrying with %d", size, size // 2)
                    size //= 2
                    continue
                pending.append((rows, states))
                # copy back every few batches rather than after each, so the host can queue the next
                # batch while the device still runs this one; NaN/Inf is still caught within _FLUSH_BATCHES
                if len(pending) >= _FLUSH_BATCHES:
                    flush()
                start += len(rows)
                bar.update(len(rows))
            flush()
    finally:
        pending.clear()
        if was_training:
            model.train()
    assert out is not None
    return out


def raise_non_finite(bad: np.ndarray, rows: list[int], indices: list[int], name: str, model: torch.nn.Module) -> None:
    """Raise NumericsError for ``bad [b, L]`` (True where a pooled state holds NaN/Inf); ``rows[i]`` is row i's text."""
    columns = np.flatnonzero(bad.any(axis=0))
    layer = indices[int(columns[0])]
    culprits = sorted(rows[i] for i in np.flatnonzero(bad[:, columns[0]]))
    dtype = getattr(model, "dtype", None)
    raise NumericsError(
        f"NaN/Inf in the pooled hidden states of {name} (dtype {dtype}) at layer {layer} "
        f"(layers affected: {[indices[int(c)] for c in columns]}) for text rows {culprits} (indices into the texts given). "
        "This is usually an overflow in float16: load the model with dtype float32 or bfloat16."
    )
