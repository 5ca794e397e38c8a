"""Reading decoder-block outputs through forward hooks, and batched, pooled hidden-state extraction.

"Layer ``l``" is the output of decoder block ``l`` (see :mod:`driftlib.model.layers`). Outputs are read
with forward hooks on the blocks, never from ``output_hidden_states`` (whose last entry is taken
after the final norm in current transformers).

:func:`extract_hidden_states` is the workhorse of every phase that needs activations. It tokenises
once, runs the texts longest first in left-padded batches, pools each requested block's output on
the device as soon as the block has run, and stops the forward pass right after the deepest
requested block (no later block, no final norm, no LM head).

Batches (:func:`plan_batches`, :func:`build_batch`): a fixed count of texts (``batch_size``, the
default), or a token budget (``tokens_per_batch``: rows x padded length), optionally with several
texts packed into each row (``packing``: position ids restart at 0 for each text and there is no
attention mask, so transformers builds a block-diagonal causal mask; checked per model by
:func:`packing_works`). The pooling tensors are built on the CPU with the inputs, so a batch needs
no host synchronisation; pooled states are copied back every ``FLUSH_BATCHES`` batches.

With ``compile=True`` the decoder blocks run through ``torch.compile`` (:func:`compiled_blocks`:
each block's ``forward`` is compiled, so the eager ops between matmuls, i.e. norms, RoPE, the gated
MLP's activation and the residual adds, are fused; the forward hooks that read and stop still run
eagerly around the compiled forward). All blocks of a model share one compiled graph; packed rows
are then padded to one fixed width (the longest text) so that batches repeat one shape, and the
last, smaller batch compiles once more with a dynamic row count (``dynamic=None``: automatic).
"""

from __future__ import annotations

import bisect
import gc
import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from driftlib.core.errors import ConfigError, DataError, ModelError, NumericsError
from driftlib.core.layerspec import LayerSpec, resolve_layers
from driftlib.model.layers import find_decoder_layers, hidden_size
from driftlib.model.pooling import POOLING_METHODS, PoolingMethod, pool_slots, token_weights

logger = logging.getLogger(__name__)

T = TypeVar("T")

TRUNCATION_SIDES: tuple[str, ...] = ("left", "right")

#: pooled batches kept on the device before one copy to the CPU (and the NaN/Inf check)
FLUSH_BATCHES = 8

#: keyword arguments of ``torch.compile`` for the decoder blocks when ``compile=True`` (inductor,
#: default mode; ``dynamic=None``: a shape seen first is compiled static, a second one dynamic)
COMPILE_OPTIONS: dict[str, object] = {"mode": None, "dynamic": None}


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


@contextmanager
def compiled_blocks(model: torch.nn.Module, blocks: Sequence[int], **options: object) -> Iterator[None]:
    """Run the decoder blocks ``blocks`` through ``torch.compile`` while the context is open.

    Each block's ``forward`` is replaced by ``torch.compile(block.forward, **options)``
    (``options``: :data:`COMPILE_OPTIONS` when none are given). The module's ``__call__`` stays
    eager, so forward hooks (reading, steering, :class:`StopForward`) run around the compiled
    forward as before. Blocks of one class share one compiled graph (torch caches it on the code
    of ``forward``), also across calls. Every block's own ``forward`` is put back on exit, also on an
    exception.

    Args:
        model: a model whose blocks :func:`~driftlib.model.layers.find_decoder_layers` finds.
        blocks: indices of the blocks to compile.
        options: keyword arguments of ``torch.compile`` (``mode``, ``dynamic``, ``backend``, ...).
    """
    options = options or dict(COMPILE_OPTIONS)
    layers = find_decoder_layers(model)
    saved: list[tuple[torch.nn.Module, object]] = []
    try:
        for index in blocks:
            block = layers[index]
            saved.append((block, vars(block).get("forward")))
            block.forward = torch.compile(block.forward, **options)  # type: ignore[method-assign]
        yield
    finally:
        for block, own in reversed(saved):
            if own is None:
                del block.forward
            else:
                block.forward = own  # type: ignore[method-assign]


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


# --------------------------------------------------------------------------------------------
# batches: a fixed count of texts or a token budget, left-padded or packed


def plan_batches(
    lengths: Sequence[int],
    rows: Sequence[int],
    *,
    batch_size: int = 16,
    tokens_per_batch: int | None = None,
    packing: bool = False,
) -> list[list[list[int]]]:
    """Group texts into forward passes: a list of batches, each a list of rows, each a list of texts.

    Args:
        lengths: token count of every text (indexed by text).
        rows: the texts to plan, longest first (ties in any order).
        batch_size: texts per batch when neither a token budget nor packing is used (today's
            batches: ``rows`` cut into runs of ``batch_size``).
        tokens_per_batch: with it, a batch holds as many rows as fit ``rows x padded length <=
            tokens_per_batch`` (at least one); ``batch_size`` is then not used.
        packing: put several texts one after the other in a row (best-fit decreasing into rows of
            the longest text's length), so that rows carry almost no padding. Without a token
            budget, a packed batch holds ``batch_size`` rows' worth of tokens
            (``batch_size x`` the longest length).

    Returns:
        ``batches[k][i]``: the texts of row ``i`` of batch ``k`` (one text per row unless packing).
        Every text of ``rows`` appears exactly once; without packing, batches follow ``rows``.
    """
    rows = list(rows)
    if not rows:
        return []
    if not packing:
        if tokens_per_batch is None:
            return [[[row] for row in rows[i : i + batch_size]] for i in range(0, len(rows), batch_size)]
        batches: list[list[list[int]]] = []
        start = 0
        while start < len(rows):
            count = max(1, tokens_per_batch // lengths[rows[start]])  # the first text is the longest
            batches.append([[row] for row in rows[start : start + count]])
            start += count
        return batches
    capacity = max(lengths[row] for row in rows)
    budget = tokens_per_batch if tokens_per_batch is not None else batch_size * capacity
    packed = pack_rows(lengths, sorted(rows, key=lambda row: -lengths[row]), capacity)
    per_batch = max(1, budget // capacity)
    return [packed[i : i + per_batch] for i in range(0, len(packed), per_batch)]


def pack_rows(lengths: Sequence[int], rows: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: put ``rows`` (longest first) into bins of ``capacity`` tokens.

    Each text goes into the fullest bin that still has room for it, or opens a new bin. Bins
    keep the order in which their texts were placed.
    """
    smallest = min(lengths[row] for row in rows)
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin), sorted; bins with no room for any text are dropped
    for row in rows:
        need = lengths[row]
        at = bisect.bisect_left(free, (need, -1))
        if at < len(free):
            room, index = free.pop(at)
            bins[index].append(row)
        else:
            room, index = capacity, len(bins)
            bins.append([row])
        room -= need
        if room >= smallest:
            bisect.insort(free, (room, index))
    return bins


@dataclass
class Batch:
    """One forward pass's inputs and the tensors that pool it (built on the CPU by :func:`build_batch`).

    Shapes: ``r`` rows, ``t`` positions, ``s`` texts per row at most, ``b`` texts.
    """

    #: the ``b`` texts of the batch (indices into the texts given), in the order of the pooled output
    texts: list[int]
    input_ids: torch.Tensor  #: ``[r, t]`` long
    position_ids: torch.Tensor  #: ``[r, t]`` long, counted from each text's first token
    attention_mask: torch.Tensor | None  #: ``[r, t]`` long (padded batches); None for packed rows
    weights: torch.Tensor  #: ``[r, s, t]`` float32 mean-pool weights of each slot
    slots: torch.Tensor  #: ``[b]`` long: each text's slot ``i * s + j``
    last: torch.Tensor  #: ``[b]`` long: each text's last token, ``i * t + p``
    packed: bool

    def to(self, device: torch.device) -> Batch:
        """The same batch on ``device`` (through pinned memory, without blocking, on CUDA)."""
        move = lambda tensor: _to_device(tensor, device)  # noqa: E731
        return Batch(
            self.texts, move(self.input_ids), move(self.position_ids),
            None if self.attention_mask is None else move(self.attention_mask),
            move(self.weights), move(self.slots), move(self.last), self.packed,
        )

    def forward_kwargs(self, named_args: set[str]) -> dict[str, object]:
        """Keyword arguments of the model's forward for this batch (``use_cache=False`` where accepted)."""
        kwargs: dict[str, object] = {"input_ids": self.input_ids}
        if self.attention_mask is not None:
            kwargs["attention_mask"] = self.attention_mask
        if "position_ids" in named_args:
            kwargs["position_ids"] = self.position_ids
        if "use_cache" in named_args:
            kwargs["use_cache"] = False
        return kwargs

    def pool(self, hidden: torch.Tensor, method: PoolingMethod) -> torch.Tensor:
        """``hidden [r, t, d]`` pooled per text: ``[b, d]`` float32 (see :func:`~driftlib.model.pooling.pool_slots`)."""
        return pool_slots(hidden, method, weights=self.weights, slots=self.slots, last=self.last)


def build_batch(
    ids: Sequence[Sequence[int]],
    rows: Sequence[Sequence[int]],
    pad_id: int,
    *,
    packed: bool = False,
    pool_last: Sequence[int] | None = None,
    skip_first: bool = True,
    width: int | None = None,
) -> Batch:
    """The CPU tensors of one batch.

    Args:
        ids: token ids of every text.
        rows: the texts of each row (one per row unless ``packed``), as :func:`plan_batches` gives them.
        pad_id: the padding token id.
        packed: lay each row's texts one after the other from position 0, padding at the end (the
            padding forms a sequence of its own, with positions from 0, that no text sees), no
            attention mask; position ids restart at 0 for every text, which is how transformers
            recognises packed sequences and keeps each one to itself. Otherwise every row is one
            text, padded on the left, with an attention mask and position ids counted from its
            first real token.
        pool_last: per text (indexed by text), how many of its last tokens are pooled (None: all).
        skip_first: for the mean, leave out the first pooled token of each text that pools more than one.
        width: packed rows only: pad the rows to at least this many positions (a fixed shape for
            compiled blocks); ``None``: to the fullest row.

    Returns:
        A :class:`Batch`; its texts are the texts of ``rows`` in row order.
    """
    texts = [text for row in rows for text in row]
    if not packed:
        if any(len(row) != 1 for row in rows):
            raise ValueError("build_batch: an unpacked batch holds one text per row")
        seqs = [ids[text] for text in texts]
        input_ids, mask = left_pad(seqs, pad_id)
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
        pool_mask = mask
        if pool_last is not None:
            length = mask.shape[1]
            start = torch.tensor([length - pool_last[text] for text in texts], dtype=torch.long)
            pool_mask = mask * (torch.arange(length)[None, :] >= start[:, None]).to(mask.dtype)
        weights = token_weights(pool_mask, skip_first=skip_first).unsqueeze(1)  # [b, 1, t]
        index = torch.arange(len(texts))
        return Batch(texts, input_ids, position_ids, mask, weights, index, index * mask.shape[1] + mask.shape[1] - 1, False)
    width = max(max(sum(len(ids[text]) for text in row) for row in rows), width or 0)
    per_row = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    pooled = torch.zeros((len(rows), per_row, width), dtype=torch.bool)
    slots: list[int] = []
    last: list[int] = []
    for i, row in enumerate(rows):
        offset = 0
        for j, text in enumerate(row):
            seq = ids[text]
            n = len(seq)
            input_ids[i, offset : offset + n] = torch.tensor(seq, dtype=torch.long)
            position_ids[i, offset : offset + n] = torch.arange(n)
            span = n if pool_last is None else pool_last[text]
            first = offset + n - span + (1 if skip_first and span > 1 else 0)
            pooled[i, j, first : offset + n] = True
            slots.append(i * per_row + j)
            last.append(i * width + offset + n - 1)
            offset += n
        position_ids[i, offset:] = torch.arange(width - offset)
    weights = pooled.to(torch.float32)
    weights = weights / weights.sum(dim=2, keepdim=True).clamp(min=1.0)
    return Batch(texts, input_ids, position_ids, None, weights, torch.tensor(slots), torch.tensor(last), True)


def packing_works(model: torch.nn.Module, block: int, named_args: set[str] | None = None) -> bool:
    """Whether ``model`` keeps packed sequences apart (checked by running it, up to block ``block``).

    Packing relies on the model's forward building a block-diagonal causal mask from position ids
    that restart at 0 (transformers' packed-sequence detection, for a forward without an attention
    mask and without a cache). Three short passes tell: a sequence alone; the same sequence packed
    after another one; and the same packed row with an all-ones attention mask (which turns the
    detection off, so the sequence attends to its neighbour). Packing works when the packed result
    equals the one alone far more closely than the mixed one does.
    """
    named_args = named_forward_args(model) if named_args is None else named_args
    if "position_ids" not in named_args or "attention_mask" not in named_args:
        return False
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    vocab = getattr(embeddings, "num_embeddings", None) or 2
    device = input_device(model)
    before, probe = [3, 1, 4, 1, 5, 9], [2, 6, 5, 3]
    before, probe = [t % vocab for t in before], [t % vocab for t in probe]
    captured: list[torch.Tensor] = []

    def on_output(layer: int, hidden: torch.Tensor) -> None:
        captured.append(hidden[:, -len(probe) :].to(torch.float32))

    def run(seq: list[int], positions: list[int], mask: bool) -> None:
        kwargs: dict[str, object] = {
            "input_ids": torch.tensor([seq], device=device),
            "position_ids": torch.tensor([positions], device=device),
        }
        if mask:
            kwargs["attention_mask"] = torch.ones((1, len(seq)), dtype=torch.long, device=device)
        if "use_cache" in named_args:
            kwargs["use_cache"] = False
        try:
            model(**kwargs)
        except StopForward:
            pass

    restart = list(range(len(before))) + list(range(len(probe)))
    try:
        with block_hooks(model, [block], on_output, stop_after=block), torch.inference_mode():
            run(probe, list(range(len(probe))), False)
            run(before + probe, restart, False)
            run(before + probe, restart, True)
    except Exception as exc:  # noqa: BLE001 - any failure means: do not pack
        logger.info("packed sequences not supported by %s (%s: %s); using padded batches", type(model).__name__, type(exc).__name__, exc)
        return False
    if len(captured) != 3:
        return False
    alone, packed, mixed = captured
    apart = float((packed - alone).abs().max())
    together = float((mixed - alone).abs().max())
    works = bool(np.isfinite(apart) and together > 0 and apart <= 0.05 * together)
    if not works:
        logger.info("packed sequences not kept apart by %s (difference %.3g, against %.3g mixed); "
                    "using padded batches", type(model).__name__, apart, together)
    return works


def check_tokens_per_batch(tokens_per_batch: int | None) -> None:
    if tokens_per_batch is not None and (
        isinstance(tokens_per_batch, bool) or not isinstance(tokens_per_batch, int) or tokens_per_batch < 1
    ):
        raise ConfigError(f"tokens_per_batch: {tokens_per_batch!r}; use a positive integer (or null for a fixed count)")


class BatchRunner:
    """Plans the batches of one extraction or sweep and re-plans what is left on out-of-memory.

    Iterate :meth:`next` for the next batch's texts per row; call :meth:`done` once it ran, or
    :meth:`shrink` when it ran out of memory (halves the batch size or token budget, and stops
    packing once a single packed row is too much).
    """

    def __init__(self, lengths: Sequence[int], order: Sequence[int], *, batch_size: int,
                 tokens_per_batch: int | None, packing: bool) -> None:
        self.lengths = list(lengths)
        self.batch_size, self.tokens_per_batch, self.packing = batch_size, tokens_per_batch, packing
        #: the longest text: the row width of every packed batch (re-plans after an OOM pack no wider)
        self.width = max((self.lengths[row] for row in order), default=0)
        if packing and tokens_per_batch is None and order:
            self.tokens_per_batch = batch_size * max(self.lengths[row] for row in order)
        self.plan = plan_batches(self.lengths, order, batch_size=batch_size,
                                 tokens_per_batch=self.tokens_per_batch, packing=packing)
        self.at = 0

    def next(self) -> list[list[int]] | None:
        return self.plan[self.at] if self.at < len(self.plan) else None

    def done(self) -> None:
        self.at += 1

    def shrink(self) -> str | None:
        """Re-plan the remaining texts with smaller batches; the log line saying so, or None when
        the failed batch was a single text (nothing smaller to try)."""
        failed = self.plan[self.at]
        if len(failed) == 1 and len(failed[0]) == 1:
            return None
        if self.tokens_per_batch is None:
            message = f"out of memory at batch size {self.batch_size}; retrying with {self.batch_size // 2}"
            self.batch_size //= 2
        elif len(failed) == 1:  # one packed row: stop packing
            message = f"out of memory on one packed row of {len(failed[0])} texts; retrying without packing"
            self.packing = False
        else:
            message = (f"out of memory at {self.tokens_per_batch} tokens per batch; "
                       f"retrying with {self.tokens_per_batch // 2}")
            self.tokens_per_batch //= 2
        rest = sorted((text for batch in self.plan[self.at :] for row in batch for text in row),
                      key=lambda text: (-self.lengths[text], text))
        self.plan = self.plan[: self.at] + plan_batches(
            self.lengths, rest, batch_size=self.batch_size, tokens_per_batch=self.tokens_per_batch, packing=self.packing)
        return message


def run_batches(runner: BatchRunner, run: Callable[[list[list[int]]], T], *, what: str,
                on_oom: Callable[[], None] | None = None) -> Iterator[T]:
    """``run(rows)`` on each batch that ``runner`` plans, re-planning smaller batches after out-of-memory.

    Args:
        runner: the plan; each batch that ran is marked done.
        run: computes one batch from its rows (text indices per row).
        what: what was running, for the error when a single text does not fit (``"running llama"``).
        on_oom: called after an out-of-memory error, before the retry (to drop partial results).

    Yields:
        ``run``'s result for each batch that fit, in the plan's order.

    Raises:
        ModelError: a single text runs out of memory.
    """
    while (rows := runner.next()) is not None:
        try:
            result = run(rows)
        except torch.OutOfMemoryError as exc:
            if on_oom is not None:
                on_oom()
            message = runner.shrink()
            if message is None:
                text = rows[0][0]
                raise ModelError(
                    f"out of memory {what} on one text of {runner.lengths[text]} tokens (row {text}); "
                    "lower max_length, use a smaller dtype, or use a device with more memory"
                ) from exc
        else:
            message = None
        if message is not None:  # outside the except block, so the traceback no longer pins the batch's tensors
            free_device_memory()
            logger.warning(message)
            continue
        runner.done()
        yield result


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
    tokens_per_batch: int | None = None,
    packing: bool = False,
    compile: bool = False,
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
        tokens_per_batch: batch by a token budget instead of a count: each forward pass holds
            as many rows as fit ``rows x padded length <= tokens_per_batch`` (``batch_size`` is
            then not used; the budget is halved on out-of-memory). ``None``: ``batch_size`` texts.
        packing: pack several texts into each row, one after the other, with position ids
            restarting at 0 for each and no padding between them (transformers then keeps each
            text to itself with a block-diagonal causal mask), so rows carry almost no padding.
            Used only where a short check shows the model keeps packed sequences apart
            (:func:`packing_works`); otherwise the batches are padded as without it. The results
            equal the padded ones to float tolerance.
        compile: run blocks ``0..deepest`` through ``torch.compile`` (:func:`compiled_blocks`,
            options :data:`COMPILE_OPTIONS`): faster on a GPU once compiled (the first batches of a
            new shape wait for the compiler: tens of seconds), same results to float tolerance.
            Packed rows are padded to the longest text so batches repeat one shape. Off by default.

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
    check_tokens_per_batch(tokens_per_batch)
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
        "extracting %s-pooled block outputs %s of %s for %d texts (%s%s%s, %d-%d tokens)",
        pooling, indices, name, n, f"batch {batch_size}" if tokens_per_batch is None else f"{tokens_per_batch} tokens per batch",
        ", packed" if packing else "", ", compiled" if compile else "", len(ids[order[-1]]), len(ids[order[0]]),
    )
    batch_now: list[Batch] = []
    pooled: dict[int, torch.Tensor] = {}

    def on_output(layer: int, hidden: torch.Tensor) -> None:
        pooled[layer] = batch_now[0].pool(hidden, pooling)

    def run(rows: list[list[int]]) -> tuple[list[int], torch.Tensor]:
        batch = build_batch(ids, rows, pad_id, packed=runner.packing, pool_last=pool_last, skip_first=skip_first,
                            width=runner.width if compile else None)
        batch_now[:] = [batch.to(device)]
        pooled.clear()
        try:
            model(**batch_now[0].forward_kwargs(named_args))
        except StopForward:
            pass
        finally:
            batch_now.clear()
        missing = [layer for layer in indices if layer not in pooled]
        if missing:
            raise ModelError(f"the forward pass of {name} finished without running decoder block(s) {missing}")
        states = torch.stack([pooled[layer] for layer in indices], dim=1)  # [b, L, d]
        pooled.clear()
        return batch.texts, states

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

    was_training = model.training
    if was_training:
        model.eval()
    try:
        runner = BatchRunner([len(seq) for seq in ids], order, batch_size=batch_size, tokens_per_batch=tokens_per_batch,
                             packing=bool(packing) and packing_works(model, deepest, named_args))
        with (
            compiled_blocks(model, range(deepest + 1)) if compile else nullcontext(),
            block_hooks(model, indices, on_output, stop_after=deepest),
            torch.inference_mode(),
            tqdm(total=n, desc=f"hidden states {name}", unit="text", disable=not progress, leave=False) as bar,
        ):
            for texts_done, states in run_batches(runner, run, what=f"running {name}", on_oom=pooled.clear):
                pending.append((texts_done, states))
                # copy back every few batches rather than after each, so the host can queue the next
                # batch while the device still runs this one; NaN/Inf is still caught within FLUSH_BATCHES
                if len(pending) >= FLUSH_BATCHES:
                    flush()
                bar.update(len(texts_done))
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
