"""Lambda sweeps with a cached prefix against independent steered extractions, on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from random_models import SAMPLE_TEXTS, VOCAB, bpe_tokenizer, out_of_memory_above, random_vectors

from driftlib.core.errors import ConfigError, ModelError
from driftlib.model.forward import extract_hidden_states
from driftlib.model.layers import find_decoder_layers
from driftlib.steer.hooks import steer
from driftlib.steer.spec import SteeringSpec
from driftlib.steer.sweep import random_like, replay_prefix, sweep_hidden_states

HIDDEN = 32
TEXTS = SAMPLE_TEXTS
LAMBDAS = [0.0, 0.5, -1.0, 2.0]

_COMMON = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2)
FAMILIES: dict[str, transformers.PretrainedConfig] = {
    "llama": transformers.LlamaConfig(**_COMMON),
    "qwen2": transformers.Qwen2Config(**_COMMON),
    "mistral": transformers.MistralConfig(**_COMMON),
    "gemma2": transformers.Gemma2Config(**_COMMON, head_dim=8, attn_implementation="eager"),
    "gpt2": transformers.GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=5, n_head=4, n_positions=128),
    # Falcon blocks return a tuple: the replay must hand one back too
    "falcon": transformers.FalconConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=5, num_attention_heads=4),
}


def _tokenizer() -> transformers.PreTrainedTokenizerFast:
    return bpe_tokenizer(TEXTS)


def _model(family: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(FAMILIES[family]).eval()


def _vectors(layers: list[int], seed: int = 1, norm: float = 4.0) -> dict[int, np.ndarray]:
    return random_vectors(layers, HIDDEN, seed=seed, norm=norm)


def _independent(model, tokenizer, vectors, lambdas, measure, **kw) -> np.ndarray:
    """One full extraction per lambda under steer(): [len(lambdas), n, len(measure), d]."""
    preserve = kw.pop("preserve_norm", False)
    runs = []
    for lam in lambdas:
        with steer(model, vectors, lam, preserve_norm=preserve):
            runs.append(extract_hidden_states(model, tokenizer, TEXTS, measure, progress=False, **kw))
    return np.stack(runs)


@pytest.fixture(scope="module")
def tokenizer() -> transformers.PreTrainedTokenizerFast:
    return _tokenizer()


@pytest.fixture(scope="module")
def llama() -> torch.nn.Module:
    return _model("llama")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_sweep_equals_independent_steered_extractions(family: str, tokenizer: object) -> None:
    model = _model(family)
    vectors = _vectors([1, 2])
    blocks = list(find_decoder_layers(model))
    got = sweep_hidden_states(model, tokenizer, TEXTS, vectors, LAMBDAS, [3, 4], batch_size=3, progress=False)
    want = _independent(model, tokenizer, vectors, LAMBDAS, [3, 4], batch_size=3)
    assert got.shape == (len(LAMBDAS), len(TEXTS), 2, HIDDEN) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # steering does act (else the comparison above would prove nothing), differently per lambda
    assert np.abs(got[3] - got[0]).max() > 0.1 and np.abs(got[1] - got[2]).max() > 0.1
    # lambda 0 is the unsteered model
    plain = extract_hidden_states(model, tokenizer, TEXTS, [3, 4], batch_size=3, progress=False)
    np.testing.assert_allclose(got[0], plain, rtol=1e-5, atol=1e-5)
    assert list(find_decoder_layers(model)) == blocks  # original blocks restored


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_sweep_pooling_and_batch_sizes(llama: torch.nn.Module, tokenizer: object, pooling: str) -> None:
    vectors = _vectors([2])
    want = _independent(llama, tokenizer, vectors, LAMBDAS, [4], pooling=pooling, batch_size=7, max_length=12)
    for batch_size in (1, 2, 16):
        got = sweep_hidden_states(
            llama, tokenizer, TEXTS, vectors, LAMBDAS, [4], pooling=pooling, batch_size=batch_size, max_length=12, progress=False
        )
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_sweep_injection_at_block_zero_and_preserve_norm(llama: torch.nn.Module, tokenizer: object) -> None:
    vectors = _vectors([0, 3], norm=10.0)
    for preserve in (False, True):
        spec = SteeringSpec(layers=(0, 3), preserve_norm=preserve, vectors=vectors)
        got = sweep_hidden_states(llama, tokenizer, TEXTS, spec, LAMBDAS, [4], batch_size=4, progress=False)
        want = _independent(llama, tokenizer, vectors, LAMBDAS, [4], preserve_norm=preserve, batch_size=4)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # preserve_norm changes the result (so it was really passed on)
    plain = sweep_hidden_states(llama, tokenizer, TEXTS, vectors, [2.0], [4], batch_size=4, progress=False)
    kept = sweep_hidden_states(llama, tokenizer, TEXTS, SteeringSpec(layers=(0, 3), preserve_norm=True, vectors=vectors),
                               [2.0], [4], batch_size=4, progress=False)
    assert np.abs(plain - kept).max() > 1e-2


def test_prefix_runs_once_per_batch_and_suffix_once_per_lambda(tokenizer: object) -> None:
    model = _model("llama")
    blocks = find_decoder_layers(model)
    calls = [0] * len(blocks)
    handles = [
        block.register_forward_hook(lambda module, args, output, i=i: calls.__setitem__(i, calls[i] + 1))
        for i, block in enumerate(blocks)
    ]
    try:
        sweep_hidden_states(model, tokenizer, TEXTS, _vectors([2]), LAMBDAS, [3], batch_size=3, progress=False)
    finally:
        for handle in handles:
            handle.remove()
    n_batches = 3  # 7 texts in batches of 3
    # blocks 0, 1 (below the first injection block) run once per batch; blocks 2, 3 once per
    # batch and lambda; block 4 (after the deepest measurement block) never
    assert calls == [n_batches, n_batches, n_batches * len(LAMBDAS), n_batches * len(LAMBDAS), 0]


def test_measurement_must_lie_after_every_injection_block(llama: torch.nn.Module, tokenizer: object) -> None:
    for measure in ([2], [1], [2, 4], [3, 4]):
        with pytest.raises(ConfigError, match=r"(?s)injection block\(s\) \[1, 3\].*shift-invariant") as info:
            sweep_hidden_states(llama, tokenizer, TEXTS, _vectors([1, 3]), [1.0], measure, progress=False)
        assert str(min(measure)) in str(info.value)
    with pytest.raises(ConfigError, match="lambdas"):
        sweep_hidden_states(llama, tokenizer, TEXTS, _vectors([1]), [], [2], progress=False)
    with pytest.raises(ConfigError, match="lambdas"):
        sweep_hidden_states(llama, tokenizer, TEXTS, _vectors([1]), [float("nan")], [2], progress=False)
    with pytest.raises(ConfigError, match="hidden size"):
        sweep_hidden_states(llama, tokenizer, TEXTS, {1: np.ones(5)}, [1.0], [2], progress=False)
    with pytest.raises(ConfigError, match="twice"):
        sweep_hidden_states(llama, tokenizer, TEXTS, {1: np.ones(HIDDEN), -4: np.ones(HIDDEN)}, [1.0], [2], progress=False)
    # negative keys are block indices counted from the end: -4 is block 1
    a = sweep_hidden_states(llama, tokenizer, TEXTS, {-4: _vectors([1])[1]}, [1.0], [2], progress=False)
    b = sweep_hidden_states(llama, tokenizer, TEXTS, _vectors([1]), [1.0], [2], progress=False)
    np.testing.assert_array_equal(a, b)


def test_replay_restores_blocks_on_error_and_checks_shapes(llama: torch.nn.Module, tokenizer: object) -> None:
    blocks = find_decoder_layers(llama)
    before = list(blocks)
    ids = torch.tensor([tokenizer(TEXTS[0])["input_ids"]])
    with torch.no_grad():
        out = llama(input_ids=ids, output_hidden_states=True)
    cached = out.hidden_states[2]  # = output of block 1
    with pytest.raises(RuntimeError, match="boom"), replay_prefix(llama, 2, cached):
        assert blocks[0] is not before[0] and blocks[2] is before[2]
        raise RuntimeError("boom")
    assert list(blocks) == before
    # a replay reproduces the full pass ...
    with torch.no_grad(), replay_prefix(llama, 2, cached):
        again = llama(input_ids=ids)
    torch.testing.assert_close(again.logits, out.logits)
    # ... and only for the batch it was recorded for
    with pytest.raises(ModelError, match="shape"), torch.no_grad(), replay_prefix(llama, 2, cached):
        llama(input_ids=ids[:, :-1])
    assert list(blocks) == before


def test_sweep_keeps_text_order_and_handles_no_texts(llama: torch.nn.Module, tokenizer: object) -> None:
    vectors = _vectors([1])
    got = sweep_hidden_states(llama, tokenizer, TEXTS, vectors, [1.0], [3], batch_size=2, progress=False)
    rev = sweep_hidden_states(llama, tokenizer, TEXTS[::-1], vectors, [1.0], [3], batch_size=2, progress=False)
    np.testing.assert_allclose(rev[:, ::-1], got, rtol=1e-5, atol=1e-5)
    assert sweep_hidden_states(llama, tokenizer, [], vectors, [0.0, 1.0], [3, 4], progress=False).shape == (2, 0, 2, HIDDEN)


def test_random_like_keeps_norms_and_is_seeded() -> None:
    rng = np.random.default_rng(5)
    vectors = {3: rng.standard_normal(64) * 7, 5: torch.randn(64) * 0.1, 1: np.zeros(64)}
    a = random_like(vectors, seed=0)
    assert sorted(a) == [1, 3, 5]
    for key, value in vectors.items():
        want = float(np.linalg.norm(np.asarray(value, dtype=np.float64)))
        assert a[key].dtype == np.float32 and a[key].shape == (64,)
        assert abs(float(np.linalg.norm(a[key].astype(np.float64))) - want) <= 1e-5 * max(want, 1.0)
    # a random direction: not the vector's own, nor the same across layers
    v3 = np.asarray(vectors[3])
    assert abs(a[3] @ v3) / (np.linalg.norm(a[3]) * np.linalg.norm(v3)) < 0.6
    assert abs(a[3] @ a[5]) / (np.linalg.norm(a[3]) * np.linalg.norm(a[5])) < 0.6
    np.testing.assert_array_equal(random_like(vectors, seed=0)[3], a[3])
    assert not np.allclose(random_like(vectors, seed=1)[3], a[3])
    # isotropic: the mean of many unit draws is near zero, each coordinate's variance near 1/d
    draws = np.stack([random_like({0: np.ones(16)}, seed=s)[0] / 4.0 for s in range(2000)])
    assert np.abs(draws.mean(axis=0)).max() < 0.03
    np.testing.assert_allclose(draws.var(axis=0), 1 / 16, rtol=0.2)


def test_sweep_halves_the_batch_on_out_of_memory_and_gives_the_same_states(
        llama: torch.nn.Module, tokenizer: object, caplog: pytest.LogCaptureFixture) -> None:
    """The sweep shares the extraction's out-of-memory handling (model.forward.run_batches): a batch that
    does not fit is re-planned at half the size, the result is unchanged; one text that does not fit
    is an error naming the sweep."""
    import logging

    vectors = _vectors([2])
    want = sweep_hidden_states(llama, tokenizer, TEXTS, vectors, LAMBDAS, [4], batch_size=8, progress=False)
    with out_of_memory_above(llama) as state:
        state["limit"] = 2
        with caplog.at_level(logging.WARNING, logger="driftlib.model.forward"):
            got = sweep_hidden_states(llama, tokenizer, TEXTS, vectors, LAMBDAS, [4], batch_size=8, progress=False)
        sizes = list(state["sizes"])
        state["limit"] = 0
        with pytest.raises(ModelError, match=r"out of memory sweeping .* on one text of \d+ tokens"):
            sweep_hidden_states(llama, tokenizer, TEXTS, vectors, LAMBDAS, [4], batch_size=2, progress=False)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert sizes[:3] == [len(TEXTS), 4, 2]  # the first batch holds every text, then it is halved twice
    assert "out of memory at batch size 8; retrying with 4" in caplog.text
