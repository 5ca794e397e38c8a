"""Pooling with an attention mask: indices under left and right padding, hand-computed means."""

from __future__ import annotations

import pytest
import torch

from driftlib.model.pooling import (
    first_token_index,
    last_token_index,
    last_token_pool,
    mean_pool,
    pool,
    token_weights,
)

# 3 rows, 5 positions: left padded, right padded, one real token (left padded)
MASK = torch.tensor(
    [
        [0, 0, 1, 1, 1],
        [1, 1, 1, 1, 0],
        [0, 0, 0, 0, 1],
    ]
)


def _hidden() -> torch.Tensor:
    # hidden[b, t] = [100 * b + t, -(100 * b + t)]: every position is identifiable by its value
    values = torch.tensor([[100.0 * b + t for t in range(5)] for b in range(3)])
    return torch.stack([values, -values], dim=-1)


def test_last_token_index_left_and_right_padding() -> None:
    assert last_token_index(MASK).tolist() == [4, 3, 4]
    assert last_token_index(MASK.bool()).dtype == torch.long
    # sum(mask) - 1 is what this must not be: it is wrong for the left-padded row
    assert (MASK.sum(dim=1) - 1).tolist() != last_token_index(MASK).tolist()


def test_first_token_index() -> None:
    assert first_token_index(MASK).tolist() == [2, 0, 4]


def test_mean_pool_skip_first_hand_computed() -> None:
    hidden = _hidden()
    got = mean_pool(hidden, MASK, skip_first=True)
    # row 0: real positions 2,3,4, skip 2 -> mean(3, 4) = 3.5
    # row 1: real positions 0..3, skip 0 -> mean(101, 102, 103) = 102
    # row 2: only position 4 -> kept: 204
    expected = torch.tensor([[3.5, -3.5], [102.0, -102.0], [204.0, -204.0]])
    torch.testing.assert_close(got, expected)
    assert got.dtype == torch.float32


def test_mean_pool_without_skip_first() -> None:
    got = mean_pool(_hidden(), MASK, skip_first=False)
    expected = torch.tensor([[3.0, -3.0], [101.5, -101.5], [204.0, -204.0]])
    torch.testing.assert_close(got, expected)


def test_token_weights_rows_sum_to_one() -> None:
    weights = token_weights(MASK, skip_first=True)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    assert weights[0].tolist() == [0.0, 0.0, 0.0, 0.5, 0.5]


def test_padding_with_nan_does_not_leak_into_pools() -> None:
    hidden = _hidden()
    hidden[0, :2] = float("nan")  # padded positions of row 0
    hidden[1, 4] = float("inf")  # padded position of row 1
    assert torch.isfinite(mean_pool(hidden, MASK)).all()
    assert torch.isfinite(last_token_pool(hidden, MASK)).all()


def test_last_token_pool_picks_last_real_token() -> None:
    got = last_token_pool(_hidden(), MASK)
    torch.testing.assert_close(got, torch.tensor([[4.0, -4.0], [103.0, -103.0], [204.0, -204.0]]))


def test_pool_dispatch_and_bfloat16_accumulates_in_float32() -> None:
    hidden = torch.randn(2, 7, 3)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])
    torch.testing.assert_close(pool(hidden, mask, "mean"), mean_pool(hidden, mask))
    torch.testing.assert_close(pool(hidden, mask, "last"), last_token_pool(hidden, mask))
    torch.testing.assert_close(pool(hidden, mask, "mean", skip_first=False), mean_pool(hidden, mask, skip_first=False))
    out = pool(hidden.to(torch.bfloat16), mask, "mean")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, mean_pool(hidden.to(torch.bfloat16).float(), mask))


def test_pool_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="pooling method"):
        pool(_hidden(), MASK, "max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        mean_pool(torch.zeros(2, 3, 4), torch.tensor([[1, 1, 1], [0, 0, 0]]))
    with pytest.raises(ValueError, match="matching"):
        mean_pool(torch.zeros(2, 4, 4), torch.ones(2, 3))
