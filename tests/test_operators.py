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
    with pytest.raises(ConfigError, match="steering.operator: 'ablate_all' is not a steering operator; use one of ablate, ablate_add, add, conditional"):
        operator_named("ablate_all")


# --------------------------------------------------------------------------------------------
# in a model: ablation, gating, generation with and without the KV cache

import numpy as np  # noqa: E402
import transformers  # noqa: E402

from driftlib.model.forward import record_block_outputs  # noqa: E402
from driftlib.stats.condition import Condition  # noqa: E402
from driftlib.steer.hooks import steer  # noqa: E402
from driftlib.steer.spec import SteeringSpec  # noqa: E402

D = 32
IDS = torch.tensor([[0, 0, 0, 17, 42, 99, 7], [5, 23, 61, 88, 14, 120, 33], [0, 9, 8, 7, 6, 5, 4]])
MASK = (IDS != 0).long()


@pytest.fixture(scope="module")
def llama() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=300, hidden_size=D, intermediate_size=64, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def _v(seed: int = 1, scale: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(D) * scale).astype(np.float32)


def _block_output(model, spec, layer: int) -> torch.Tensor:
    with torch.no_grad(), steer(model, spec), record_block_outputs(model, [layer]) as store:
        model(input_ids=IDS, attention_mask=MASK)
    return store[layer].clone()


def test_ablate_leaves_no_component_along_the_vector(llama) -> None:
    v = _v()
    r = torch.from_numpy(v / np.linalg.norm(v))
    spec = SteeringSpec(layers=(1,), operator="ablate", lam=1.0, vectors={1: v})
    out = _block_output(llama, spec, 1)
    assert float((out @ r).abs().max()) < 1e-5
    plain = _block_output(llama, spec.with_lam(0.0), 1)
    assert float((plain @ r).abs().max()) > 1e-2  # there was a component to remove
    # half the share: the component halves
    half = _block_output(llama, spec.with_lam(0.5), 1)
    torch.testing.assert_close(half @ r, 0.5 * (plain @ r), rtol=1e-4, atol=1e-5)
    # ablate_add: the component along r becomes lam * |v|
    both = _block_output(llama, SteeringSpec(layers=(1,), operator="ablate_add", lam=1.0, vectors={1: v}), 1)
    torch.testing.assert_close(both @ r, torch.full_like(both @ r, float(np.linalg.norm(v))), rtol=1e-4, atol=1e-4)


def _condition(layer: int, direction: np.ndarray, threshold: float) -> Condition:
    return Condition(layer=layer, direction=direction.astype(np.float32), threshold=threshold)


def test_conditional_steers_exactly_the_prompts_whose_score_passes(llama) -> None:
    v, c = _v(1), _v(2, scale=1.0)
    c = c / np.linalg.norm(c)
    plain = _block_output(llama, SteeringSpec(layers=(2,), vectors={2: v}, lam=0.0), 2)
    # the condition scores by hand: block 1's output at each prompt's last real token, on c
    with torch.no_grad(), record_block_outputs(llama, [1]) as store:
        llama(input_ids=IDS, attention_mask=MASK)
    scores = (store[1][:, -1, :] @ torch.from_numpy(c)).numpy()
    threshold = float(np.sort(scores)[1] - 1e-4)  # the two highest-scoring prompts pass
    passes = scores > threshold
    assert passes.sum() == 2
    spec = SteeringSpec(layers=(2,), operator="conditional", vectors={2: v}, lam=2.0,
                        condition=_condition(1, c, threshold))
    out = _block_output(llama, spec, 2)
    added = plain + 2.0 * torch.from_numpy(v)
    for row in range(3):
        torch.testing.assert_close(out[row], added[row] if passes[row] else plain[row])
    # a condition nobody passes is no steering, bit for bit
    never = spec.with_condition(_condition(1, c, float("inf")))
    assert torch.equal(_block_output(llama, never, 2), plain)


def test_the_condition_must_be_read_before_the_injection(llama) -> None:
    spec = SteeringSpec(layers=(1,), operator="conditional", vectors={1: _v()}, condition=_condition(2, _v(3), 0.0))
    with pytest.raises(ConfigError, match="condition layer 2 lies after the first injection block 1"):
        _block_output(llama, spec, 1)
    with pytest.raises(ConfigError, match="needs a condition"):
        _block_output(llama, SteeringSpec(layers=(1,), operator="conditional", vectors={1: _v()}), 1)


@pytest.mark.parametrize("operator", sorted(OPERATORS))
def test_generation_with_and_without_the_kv_cache_agree_under_every_operator(llama, operator: str) -> None:
    c = _v(2, scale=1.0)
    spec = SteeringSpec(layers=(2,), operator=operator, vectors={2: _v(4, scale=6.0)}, lam=3.0,
                        condition=_condition(1, c / np.linalg.norm(c), 0.0))
    kwargs = dict(input_ids=IDS, attention_mask=MASK, max_new_tokens=6, do_sample=False, pad_token_id=0,
                  eos_token_id=None)
    plain = llama.generate(**kwargs)
    with steer(llama, spec):
        cached = llama.generate(**kwargs, use_cache=True)
        uncached = llama.generate(**kwargs, use_cache=False)
    assert torch.equal(cached, uncached), operator
    assert not torch.equal(cached, plain), operator
