"""Pooling per-token hidden states into one vector per text, using the attention mask.

Pure torch; works on any device. Shapes: ``b`` texts, ``t`` positions, ``d`` hidden size. The mask is
``1`` (or ``True``) at real tokens and ``0`` at padding, and may be padded on either side: every
index here is found from the mask itself, never as ``sum(mask) - 1`` (which is wrong under left
padding, the norm for decoder-only batches).

Pooled vectors are returned in float32 whatever the input dtype, so that a mean over hundreds of
bfloat16 tokens is not accumulated in bfloat16.

About ``skip_first``: in many models the first position carries a huge norm (measured on
SmolLM2-135M: about 24,000 from block 11 on, against a median token norm of 130-217), so it would
dominate a mean pool. By default :func:`mean_pool` leaves out the first real token of each row
(usually the BOS token, or the first word for tokenizers without one) whenever the row has more
than one real token; a row of one token keeps it.
"""

from __future__ import annotations

from typing import Literal

import torch

PoolingMethod = Literal["mean", "last"]
POOLING_METHODS: tuple[str, ...] = ("mean", "last")


def _check(hidden: torch.Tensor | None, mask: torch.Tensor) -> None:
    if mask.dim() != 2:
        raise ValueError(f"mask must be [b, t], got shape {tuple(mask.shape)}")
    if hidden is not None and (hidden.dim() != 3 or hidden.shape[:2] != mask.shape):
        raise ValueError(f"hidden must be [b, t, d] matching mask [b, t]; got {tuple(hidden.shape)} and {tuple(mask.shape)}")
    if mask.shape[0] and not bool(mask.bool().any(dim=1).all()):
        empty = (~mask.bool().any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"rows {empty} of the attention mask have no real token; cannot pool them")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row.

    Args:
        mask: ``[b, t]`` attention mask (int or bool), left- or right-padded.

    Returns:
        ``LongTensor [b]`` on the mask's device: the largest position whose mask is non-zero.
    """
    _check(None, mask)
    return _last_index(mask)


def _last_index(mask: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    return (mask.bool().long() * positions).argmax(dim=1)


def first_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the first real token of each row.

    Args:
        mask: ``[b, t]`` attention mask (int or bool), left- or right-padded.

    Returns:
        ``LongTensor [b]``: the smallest position whose mask is non-zero.
    """
    _check(None, mask)
    return _first_index(mask)


def _first_index(mask: torch.Tensor) -> torch.Tensor:
    # argmax returns the first maximal position
    return mask.bool().long().argmax(dim=1)


def token_weights(mask: torch.Tensor, *, skip_first: bool = True) -> torch.Tensor:
    """The per-token weights of the mean pool: ``[b, t]`` float32, rows summing to 1.

    Real tokens get equal weight, padding none; with ``skip_first`` the first real token of every
    row that has more than one real token gets none either.
    """
    _check(None, mask)
    return _token_weights(mask, skip_first)


def _token_weights(mask: torch.Tensor, skip_first: bool) -> torch.Tensor:
    real = mask.bool()
    if skip_first:
        rows = torch.arange(mask.shape[0], device=mask.device)
        first = _first_index(mask)
        keep_first = real.sum(dim=1) <= 1
        real = real.clone()
        real[rows, first] = keep_first
    weights = real.to(torch.float32)
    return weights / weights.sum(dim=1, keepdim=True)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor, *, skip_first: bool = True) -> torch.Tensor:
    """Mean of the hidden states over the real tokens of each row.

    Args:
        hidden: ``[b, t, d]`` hidden states (any float dtype).
        mask: ``[b, t]`` attention mask, left- or right-padded.
        skip_first: leave out each row's first real token when the row has more than one
            (see the module docstring).

    Returns:
        ``[b, d]`` float32 on ``hidden``'s device. Padded positions never contribute, even if they
        hold NaN or Inf.
    """
    _check(hidden, mask)
    return _mean_pool(hidden, mask, skip_first)


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor, skip_first: bool) -> torch.Tensor:
    weights = _token_weights(mask.to(hidden.device), skip_first)
    # zero the unweighted positions first: 0 * NaN would still be NaN
    states = hidden.to(torch.float32).masked_fill(weights.unsqueeze(-1) == 0, 0.0)
    return torch.bmm(weights.unsqueeze(1), states).squeeze(1)


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hidden state at each row's last real token.

    Args:
        hidden: ``[b, t, d]`` hidden states.
        mask: ``[b, t]`` attention mask, left- or right-padded.

    Returns:
        ``[b, d]`` float32 on ``hidden``'s device.
    """
    _check(hidden, mask)
    return _last_token_pool(hidden, mask)


def _last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, _last_index(mask.to(hidden.device))].to(torch.float32)


def pool(
    hidden: torch.Tensor,
    mask: torch.Tensor,
    method: PoolingMethod = "mean",
    *,
    skip_first: bool = True,
    check: bool = True,
) -> torch.Tensor:
    """Pool ``hidden [b, t, d]`` with ``mask [b, t]`` into ``[b, d]`` float32.

    Args:
        method: ``"mean"`` (:func:`mean_pool`, honouring ``skip_first``) or ``"last"``
            (:func:`last_token_pool`; ``skip_first`` does not apply).
        check: validate shapes and that every row has a real token. That check reads the mask
            back from the device (a synchronisation); callers that validated the mask already
            (as :func:`driftlib.model.forward.extract_hidden_states` does, on the CPU) pass False.
    """
    if method not in POOLING_METHODS:
        raise ValueError(f"unknown pooling method {method!r}; use one of {', '.join(POOLING_METHODS)}")
    if check:
        _check(hidden, mask)
    if method == "mean":
        return _mean_pool(hidden, mask, skip_first)
    return _last_token_pool(hidden, mask)


def pool_slots(
    hidden: torch.Tensor,
    method: PoolingMethod,
    *,
    weights: torch.Tensor,
    slots: torch.Tensor,
    last: torch.Tensor,
) -> torch.Tensor:
    """Pool texts laid out in ``hidden [r, t, d]`` as one or several per row (padded or packed batches).

    A row of a padded batch holds one text; a row of a packed batch holds several texts one after
    the other (see :func:`driftlib.model.forward.build_batch`). Each text has a *slot*: row ``i``,
    place ``j`` among the row's texts, flat index ``i * s + j``.

    Args:
        hidden: ``[r, t, d]`` block output (any float dtype).
        method: ``"mean"`` or ``"last"``.
        weights: ``[r, s, t]`` float32 mean-pool weights: ``weights[i, j]`` is the weight of every
            position of row ``i`` for the text in slot ``(i, j)`` (rows summing to 1 for slots that
            hold a text, 0 elsewhere). Built on the CPU, so pooling needs no host synchronisation.
        slots: ``[b]`` long: the flat slot of each of the batch's ``b`` texts.
        last: ``[b]`` long: the flat index ``i * t + p`` of each text's last token.

    Returns:
        ``[b, d]`` float32 on ``hidden``'s device, in the order of ``slots``. With one text per row
        (``s == 1``) the mean is computed exactly as :func:`mean_pool` computes it (same operations),
        and a position no slot weighs never contributes, even if it holds NaN or Inf.
    """
    if method not in POOLING_METHODS:
        raise ValueError(f"unknown pooling method {method!r}; use one of {', '.join(POOLING_METHODS)}")
    rows, length, size = hidden.shape
    if method == "last":
        return hidden.reshape(rows * length, size)[last].to(torch.float32)
    # zero the positions no slot weighs first: 0 * NaN would still be NaN
    unused = (weights == 0).all(dim=1) if weights.shape[1] > 1 else weights[:, 0] == 0  # [r, t]
    states = hidden.to(torch.float32).masked_fill(unused.unsqueeze(-1), 0.0)
    pooled = torch.bmm(weights, states)  # [r, s, d]
    if weights.shape[1] == 1:
        return pooled.squeeze(1)[slots]
    return pooled.reshape(-1, size)[slots]
