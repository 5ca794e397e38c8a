"""The condition of conditional steering: fitting, accuracy with its interval, and what a perfect
condition buys in the between-class share (closed form), and the sweep under the gated operator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from random_models import SAMPLE_TEXTS, bpe_tokenizer

from driftlib.core.errors import DataError
from driftlib.model.forward import extract_hidden_states
from driftlib.stats.aqi import variance_share
from driftlib.stats.behaviour import wilson_interval
from driftlib.stats.condition import (
    Condition,
    condition_accuracy,
    fit_condition,
)
from driftlib.steer.hooks import steer
from driftlib.steer.spec import SteeringSpec
from driftlib.steer.sweep import sweep_hidden_states


def test_fit_finds_the_class_direction_and_the_best_balanced_threshold() -> None:
    # 1-D scores by construction: safe at 0, 1, 2, 3; unsafe at 2.5, 4, 5, 6 along e_0
    safe = np.array([[0.0, 1.0], [1.0, -1.0], [2.0, 0.5], [3.0, 0.0]])
    unsafe = np.array([[2.5, 1.0], [4.0, -1.0], [5.0, 0.5], [6.0, 0.0]])
    X = np.vstack([safe, unsafe])
    y_unsafe = np.array([False] * 4 + [True] * 4)
    cond = fit_condition(X, y_unsafe, layer=3)
    # the class-mean difference is (17.5 - 6) / 4 along e_0 and 0 along e_1
    np.testing.assert_allclose(cond.direction, [1.0, 0.0], atol=1e-7)
    # thresholds between 2.5 and 3 misclassify one prompt (balanced 7/8), and so do those between
    # 3 and 4; nothing does better. The tie goes to the cut nearest the class-mean midpoint 3.4375:
    # the midpoint between 3 and 4
    assert cond.threshold == pytest.approx(3.5)
    assert cond.calibration_accuracy == pytest.approx(7 / 8)
    assert (cond.layer, cond.n_calibration) == (3, 8)
    acc = condition_accuracy(cond, X, y_unsafe)
    assert acc.accuracy == pytest.approx(7 / 8) and acc.tpr == pytest.approx(3 / 4) and acc.tnr == 1.0
    assert (acc.ci_low, acc.ci_high) == pytest.approx(wilson_interval(7, 8))


def test_fit_refuses_one_class_and_equal_means() -> None:
    with pytest.raises(DataError, match="both classes"):
        fit_condition(np.zeros((4, 2)), np.ones(4, bool), layer=0)
    with pytest.raises(DataError, match="same mean"):
        fit_condition(np.ones((4, 2)), np.array([True, False, True, False]), layer=0)


def test_a_perfect_condition_raises_the_between_class_share_by_the_closed_form() -> None:
    """Adding lam*v to the unsafe rows only moves their centroid by lam*v and leaves the within-class
    scatter W alone: the share becomes B'/(B'+W) with B' = n p (1-p) ||c_s - c_u - lam v||^2, while
    adding to every row changes nothing."""
    rng = np.random.default_rng(0)
    n_s = n_u = 50
    X = rng.standard_normal((n_s + n_u, 6))
    y_safe = np.array([True] * n_s + [False] * n_u)
    v = rng.standard_normal(6)
    lam = 1.5
    gated = X + lam * v * (~y_safe)[:, None]
    c_s, c_u = X[y_safe].mean(axis=0), X[~y_safe].mean(axis=0)
    W = ((X[y_safe] - c_s) ** 2).sum() + ((X[~y_safe] - c_u) ** 2).sum()
    n, p = n_s + n_u, n_s / (n_s + n_u)
    B = n * p * (1 - p) * float(np.sum((c_s - c_u - lam * v) ** 2))
    assert variance_share(gated, y_safe) == pytest.approx(B / (B + W), rel=1e-10)
    assert variance_share(X + lam * v, y_safe) == pytest.approx(variance_share(X, y_safe), rel=1e-10)


def test_the_sweep_under_a_gated_operator_equals_steered_extraction_per_lambda() -> None:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=5,
                                      num_attention_heads=4, num_key_value_heads=2)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    tokenizer = bpe_tokenizer(SAMPLE_TEXTS)
    rng = np.random.default_rng(1)
    c = rng.standard_normal(32)
    cond = Condition(layer=1, direction=(c / np.linalg.norm(c)).astype(np.float32), threshold=0.0)
    spec = SteeringSpec(layers=(2,), operator="conditional", condition=cond,
                        vectors={2: (4 * rng.standard_normal(32)).astype(np.float32)})
    lambdas = [0.0, 1.0, 3.0]
    got = sweep_hidden_states(model, tokenizer, SAMPLE_TEXTS, spec, lambdas, [4], batch_size=3, progress=False,
                              pooling="mean")
    for j, lam in enumerate(lambdas):
        with steer(model, spec, lam):
            want = extract_hidden_states(model, tokenizer, SAMPLE_TEXTS, [4], batch_size=3, progress=False,
                                         pooling="mean")
        np.testing.assert_allclose(got[j], want, rtol=1e-5, atol=1e-5)
    # some prompts pass and some do not, so the gate really selects
    with torch.no_grad():
        states = extract_hidden_states(model, tokenizer, SAMPLE_TEXTS, [1], pooling="last", progress=False)[:, 0]
    passes = cond.passes(states)
    assert 0 < passes.sum() < len(SAMPLE_TEXTS)
    moved = np.abs(got[2] - got[0]).max(axis=(1, 2)) > 1e-4
    np.testing.assert_array_equal(moved, passes)
