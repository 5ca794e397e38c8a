"""Capability costs of steering (next-token KL, greedy repetition) and the choice of the best lambda."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from random_models import VOCAB, bpe_tokenizer, out_of_memory_above, random_vectors

from driftlib.core.errors import ConfigError
from driftlib.model.layers import find_decoder_layers
from driftlib.stats.selection import best_lambda
from driftlib.steer.capability import (
    greedy_continuations,
    greedy_repetition,
    next_token_kl,
    repetition_rate,
)
from driftlib.steer.hooks import steer

HIDDEN = 32
TEXTS = [
    "The weather today is mild, with light rain in the afternoon and clear skies by evening.",
    "Bread needs flour, water, salt and yeast.",
    "ok",
    "A library lends books, films and music to the people of the town for free.",
    "Numbers: 1, 2, 3, 4, 5.",
]
PROMPTS = ["The weather today is", "Bread needs", "A library lends books", "ok"]

_COMMON = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2)
CONFIGS = {
    "llama": transformers.LlamaConfig(**_COMMON),
    "gpt2": transformers.GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=5, n_head=4, n_positions=128),
    "falcon": transformers.FalconConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=5, num_attention_heads=4),
}


def _tokenizer() -> transformers.PreTrainedTokenizerFast:
    return bpe_tokenizer(TEXTS)


def _model(family: str = "llama", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(CONFIGS[family]).eval()


def _vectors(layers: list[int], seed: int = 1, norm: float = 3.0) -> dict[int, np.ndarray]:
    return random_vectors(layers, HIDDEN, seed=seed, norm=norm)


@pytest.fixture(scope="module")
def tokenizer() -> transformers.PreTrainedTokenizerFast:
    return _tokenizer()


@pytest.fixture(scope="module")
def llama() -> torch.nn.Module:
    return _model("llama")


def _hand_kl_sum(model: torch.nn.Module, tokenizer: object, text: str, vectors: dict[int, np.ndarray], lam: float) -> tuple[float, int]:
    """Sum over the positions of one unpadded text of KL(p || q), steering by a hook written here."""
    ids = torch.tensor([tokenizer(text, truncation=True, max_length=128)["input_ids"]])
    blocks = find_decoder_layers(model)

    def add(vec: np.ndarray):
        def hook(module, args, output):
            if isinstance(output, tuple):
                return (output[0] + lam * torch.from_numpy(vec), *output[1:])
            return output + lam * torch.from_numpy(vec)

        return hook

    with torch.no_grad():
        p_logits = model(input_ids=ids).logits[0].double()
        handles = [blocks[layer].register_forward_hook(add(vec)) for layer, vec in vectors.items()]
        try:
            q_logits = model(input_ids=ids).logits[0].double()
        finally:
            for handle in handles:
                handle.remove()
    kl = F.kl_div(F.log_softmax(q_logits, -1), F.log_softmax(p_logits, -1), log_target=True, reduction="none").sum(-1)
    return float(kl.sum()), ids.shape[1]


def test_kl_is_zero_at_lambda_zero_and_matches_a_hand_computation(llama: torch.nn.Module, tokenizer: object) -> None:
    vectors = _vectors([1, 3])
    got = next_token_kl(llama, tokenizer, TEXTS[:1], vectors, [0.0, 1.5], progress=False)
    assert got.shape == (2,) and got.dtype == np.float64
    assert got[0] == 0.0
    total, count = _hand_kl_sum(llama, tokenizer, TEXTS[0], vectors, 1.5)
    assert got[1] > 1e-4
    np.testing.assert_allclose(got[1], total / count, rtol=1e-4)


def test_kl_halves_the_batch_on_out_of_memory_and_gives_the_same_cost(
        llama: torch.nn.Module, tokenizer: object, caplog: pytest.LogCaptureFixture) -> None:
    """The cost shares the extraction's out-of-memory handling (model.forward.run_batches): a batch
    that does not fit is re-planned at half the size, the KL against hand values is unchanged; one
    text that does not fit is an error naming the cost."""
    import logging

    from driftlib.core.errors import ModelError

    vectors = _vectors([2])
    with out_of_memory_above(llama) as state:
        state["limit"] = 2
        with caplog.at_level(logging.WARNING, logger="driftlib.model.forward"):
            got = next_token_kl(llama, tokenizer, TEXTS, vectors, [0.0, 1.5], batch_size=8, progress=False)
        sizes = list(state["sizes"])
        state["limit"] = 0
        with pytest.raises(ModelError, match=r"out of memory computing the next-token KL of .* on one text"):
            next_token_kl(llama, tokenizer, TEXTS, vectors, [1.5], batch_size=2, progress=False)
    parts = [_hand_kl_sum(llama, tokenizer, text, vectors, 1.5) for text in TEXTS]
    np.testing.assert_allclose(got[1], sum(s for s, _ in parts) / sum(c for _, c in parts), rtol=1e-4)
    assert got[0] == 0.0
    assert sizes[:3] == [len(TEXTS), 4, 2]  # the first batch holds every text, then it is halved twice
    assert "out of memory at batch size 8; retrying with 4" in caplog.text


@pytest.mark.parametrize("family", list(CONFIGS))
def test_kl_is_the_token_weighted_mean_over_padded_batches(family: str, tokenizer: object) -> None:
    model = _model(family)
    vectors = _vectors([2])
    lambdas = [0.0, 2.0, -1.0]
    got = next_token_kl(model, tokenizer, TEXTS, vectors, lambdas, batch_size=3, progress=False)
    for j, lam in enumerate(lambdas):
        parts = [_hand_kl_sum(model, tokenizer, text, vectors, lam) for text in TEXTS]
        want = sum(s for s, _ in parts) / sum(c for _, c in parts)
        np.testing.assert_allclose(got[j], want, rtol=1e-4, atol=1e-10)
    assert got[0] == 0.0


def test_kl_grows_with_lambda_and_computes_the_unsteered_pass_once(tokenizer: object) -> None:
    model = _model("llama")
    blocks = find_decoder_layers(model)
    calls = [0] * len(blocks)
    handles = [
        block.register_forward_hook(lambda module, args, output, i=i: calls.__setitem__(i, calls[i] + 1))
        for i, block in enumerate(blocks)
    ]
    lambdas = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]
    try:
        got = next_token_kl(model, tokenizer, TEXTS, _vectors([2], seed=7), lambdas, batch_size=2, progress=False)
    finally:
        for handle in handles:
            handle.remove()
    assert got[0] == 0.0
    assert np.all(np.diff(got) > 0), got
    n_batches = 3  # 5 texts in batches of 2
    # blocks below the injection block run once per batch (the unsteered pass), the rest once more per lambda
    assert calls == [n_batches, n_batches] + [n_batches * (1 + len(lambdas))] * 3


def test_repetition_rate_equals_hand_counts() -> None:
    assert repetition_rate([[1, 2, 3, 4, 5, 6]], n=3) == 0.0
    # bigrams (1,2) (2,1) (1,2)r (2,1)r (1,2)r
    assert repetition_rate([[1, 2, 1, 2, 1, 2]], n=2) == pytest.approx(3 / 5)
    # trigrams (7,7,7) (7,7,7)r: overlapping n-grams count
    assert repetition_rate([[7, 7, 7, 7]], n=3) == pytest.approx(1 / 2)
    # repeats are counted within one continuation only; pooled over continuations: 1 of 2+3
    assert repetition_rate([[1, 2, 3, 4], [9, 8, 9, 8, 5]], n=2) == pytest.approx(1 / 7)
    assert repetition_rate([[1, 2, 3], [1, 2, 3]], n=3) == 0.0
    assert repetition_rate([[1, 1, 2]], n=1) == pytest.approx(1 / 3)
    # a loop of period 3 over 300 tokens: 298 trigrams, all but the first 3 repeat -> close to 1
    loop = [4, 5, 6] * 100
    assert repetition_rate([loop], n=3) == pytest.approx(295 / 298)
    # too short for any n-gram: undefined, not "no repetition"; short ones add nothing when pooled
    assert math.isnan(repetition_rate([[1, 2]], n=3)) and math.isnan(repetition_rate([], n=3))
    assert repetition_rate([[1, 2], [3, 3, 3, 3]], n=3) == pytest.approx(1 / 2)
    with pytest.raises(ConfigError):
        repetition_rate([[1, 2, 3]], n=0)


def test_greedy_repetition_matches_unpadded_generation(llama: torch.nn.Module, tokenizer: object) -> None:
    vectors = _vectors([2], norm=5.0)
    lambdas = [0.0, 3.0]
    got = greedy_repetition(llama, tokenizer, PROMPTS, vectors, lambdas, max_new_tokens=16, batch_size=3, progress=False)
    eos = tokenizer.eos_token_id
    for j, lam in enumerate(lambdas):
        continuations = []
        for prompt in PROMPTS:
            ids = torch.tensor([tokenizer(prompt)["input_ids"]])
            with torch.no_grad(), steer(llama, vectors, lam):
                out = llama.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16,
                                     do_sample=False, pad_token_id=eos, eos_token_id=eos)
            new = out[0, ids.shape[1]:].tolist()
            continuations.append(new[: new.index(eos)] if eos in new else new)
        assert greedy_continuations(llama, tokenizer, PROMPTS, vectors, lam, max_new_tokens=16, batch_size=3) == continuations
        assert got[j] == pytest.approx(repetition_rate(continuations, n=3))


def test_a_huge_vector_makes_greedy_generation_loop(llama: torch.nn.Module, tokenizer: object) -> None:
    """A vector along the LM-head row of one token, added at the last block, makes that token the
    argmax at every step: every continuation is t t t ..., so 16 tokens give 13 of 14 trigrams repeated."""
    head = llama.get_output_embeddings().weight.detach()
    target = next(
        t for t in range(10, VOCAB)
        if t != tokenizer.eos_token_id and int((head @ head[t]).argmax()) == t
    )
    vectors = {4: head[target].numpy()}
    got = greedy_repetition(llama, tokenizer, PROMPTS, vectors, [0.0, 1e4], max_new_tokens=16, batch_size=4, progress=False)
    assert got[1] == pytest.approx(13 / 14)
    assert got[0] < got[1]
    assert greedy_continuations(llama, tokenizer, PROMPTS[:2], vectors, 1e4, max_new_tokens=5) == [[target] * 5] * 2


def test_best_lambda_picks_the_highest_aqi_inside_the_bound() -> None:
    lambdas = [0.0, 0.5, 1.0, 2.0]
    got = best_lambda(lambdas, [10.0, 12.0, 15.0, 20.0], [0.0, 0.1, 0.3, 0.9], 0.5)
    assert got.lam == 1.0 and got.aqi == 15.0 and got.cost == 0.3
    assert got.inside_bound == [True, True, True, False] and got.steered is True
    assert got.best_outside == {"lambda": 2.0, "aqi": 20.0, "cost": 0.9}
    assert "never called a success" in got.note
    # the bound is inclusive; the best AQI inside -> no note
    got = best_lambda(lambdas, [10.0, 12.0, 15.0, 14.0], [0.0, 0.1, 0.5, 0.9], 0.5)
    assert got.lam == 1.0 and got.best_outside is None and got.note == ""


def test_best_lambda_when_no_steered_lambda_fits() -> None:
    got = best_lambda([0.0, 0.5, 1.0], [10.0, 30.0, 40.0], [0.0, 0.6, 0.9], 0.5)
    assert got.lam == 0.0 and got.aqi == 10.0 and got.steered is False
    assert got.inside_bound == [True, False, False]
    assert "no steered lambda" in got.note and "never called a success" in got.note
    assert got.best_outside["lambda"] == 1.0
    # no lambda 0 in the sweep and nothing fits: no choice at all
    got = best_lambda([0.5, 1.0], [30.0, 40.0], [0.6, 0.9], 0.5)
    assert got.lam is None and math.isnan(got.aqi) and math.isnan(got.cost)
    assert got.inside_bound == [False, False] and "no lambda at all" in got.note
    # steering inside the bound but not better than lambda 0
    got = best_lambda([0.0, 0.5], [10.0, 9.0], [0.0, 0.1], 0.5)
    assert got.lam == 0.0 and "did not raise" in got.note


def test_best_lambda_ties_nans_and_several_costs() -> None:
    # ties go to the smallest |lambda|; a NaN AQI is never chosen; a NaN cost is outside, and said so
    got = best_lambda([-1.0, 0.5, 1.0, 2.0], [15.0, 15.0, float("nan"), 16.0], [0.1, 0.1, 0.0, float("nan")], 1.0)
    assert got.lam == 0.5 and got.inside_bound == [True, True, True, False]
    assert "cost of lambda 2 could not be measured" in got.note
    # lambda 0 is inside by definition, even when its cost could not be measured (a repetition rate
    # of continuations shorter than three tokens is NaN, and so is every increase over it)
    got = best_lambda([0.0, 0.5, 1.0], [5.0, 6.0, 7.0], np.array([[0.0, np.nan], [0.1, np.nan], [0.2, np.nan]]),
                      [0.5, 0.2])
    assert got.inside_bound == [True, False, False] and got.lam == 0.0 and not got.steered
    assert "lambda 0.5, 1 could not be measured" in got.note and "no steered lambda" in got.note
    assert got.to_dict()["lambda"] == 0.0
    # two costs (KL, repetition), each with its own bound
    costs = np.array([[0.0, 0.1], [0.2, 0.1], [0.3, 0.6], [2.0, 0.1]])
    got = best_lambda([0.0, 0.5, 1.0, 2.0], [1.0, 2.0, 3.0, 4.0], costs, [1.0, 0.5])
    assert got.lam == 0.5 and got.cost == [0.2, 0.1]
    assert got.inside_bound == [True, True, False, False]
    with pytest.raises(ConfigError, match="aqi"):
        best_lambda([0.0, 1.0], [1.0], [0.0, 0.0], 1.0)
    with pytest.raises(ConfigError, match="cost"):
        best_lambda([0.0, 1.0], [1.0, 2.0], [0.0], 1.0)
    with pytest.raises(ConfigError, match="bound"):
        best_lambda([0.0, 1.0], [1.0, 2.0], costs[:2], [1.0, 2.0, 3.0])
