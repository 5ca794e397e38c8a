"""Steering operators against hand computations: what each does to a block's output."""

from __future__ import annotations

import pytest
import torch

from driftlib.core.errors import ConfigError
from driftlib.steer.operators import OPERATORS, operator_named


def test_add_is_h_plus_lambda_v() -> None:
    h = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4)
    v = torch.tensor([1.0, -2.0, 0.5, 0.0])
    add = operator_named("add")
    prepared = add.prepare(v, 2.0)
    out = add.apply(h, prepared)
    want = h + torch.tensor([2.0, -4.0, 1.0, 0.0])
    assert torch.equal(out, want)
    assert torch.equal(add.apply(h, add.prepare(v, 0.0)), h)  # lambda 0 changes nothing
    assert add.additive


def test_every_operator_acts_on_each_position_alone() -> None:
    """The sweep reuses the unsteered prefix, so an operator's output at a position may depend only
    on that position's state: steering a sequence equals steering each token on its own."""
    torch.manual_seed(0)
    h, v = torch.randn(2, 5, 8), torch.randn(8)
    for op in OPERATORS.values():
        prepared = op.prepare(v, 1.5)
        whole = op.apply(h, prepared)
        parts = torch.cat([op.apply(h[:, i : i + 1], prepared) for i in range(5)], dim=1)
        torch.testing.assert_close(whole, parts)


def test_an_unknown_operator_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="steering.operator: 'ablate_all' is not a steering operator; use one of add"):
        operator_named("ablate_all")
