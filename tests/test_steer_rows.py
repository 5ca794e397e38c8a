"""Steering stacked runs in one batch (steer_rows) and greedy generation of many runs at once
(greedy_runs): each group of rows must come out as the same rows steered alone by steer()."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from random_models import SAMPLE_TEXTS, VOCAB, bpe_tokenizer, random_vectors

from driftlib.core.errors import ConfigError, ModelError
from driftlib.model.forward import extract_hidden_states, left_pad
from driftlib.stats.condition import Condition
from driftlib.steer.capability import greedy_continuations, greedy_runs
from driftlib.steer.hooks import steer, steer_rows
from driftlib.steer.spec import SteeringSpec

HIDDEN = 32
PROMPTS = ["The weather today is", "Bread needs", "A library lends books", "ok"]


@pytest.fixture(scope="module")
def tokenizer() -> transformers.PreTrainedTokenizerFast:
    return bpe_tokenizer(SAMPLE_TEXTS + PROMPTS)


CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64,
                                              num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2),
    "gpt2": lambda: transformers.GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=5, n_head=4, n_positions=128),
    "falcon": lambda: transformers.FalconConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=5,
                                                num_attention_heads=4),
}


def _model(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(CONFIGS[family]()).eval()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return _model("llama")


def _condition(model, tokenizer) -> Condition:
    """A random direction at block 1, its threshold the median score of SAMPLE_TEXTS' last tokens there
    (so the gate passes some of them and not others)."""
    c = np.random.default_rng(1).standard_normal(HIDDEN)
    c = (c / np.linalg.norm(c)).astype(np.float32)
    states = extract_hidden_states(model, tokenizer, SAMPLE_TEXTS, [1], pooling="last", skip_first=False,
                                   progress=False)[:, 0]
    return Condition(layer=1, direction=c, threshold=float(np.median(states @ c)))


def _runs(model, tokenizer) -> list[SteeringSpec | None]:
    """Runs of every kind: unsteered, lambda 0, different operators, blocks, options and a gate."""
    add = SteeringSpec(layers=(2,)).with_vectors(random_vectors([2], HIDDEN, seed=1, norm=4.0))
    return [
        None,
        add.with_lam(2.0),
        SteeringSpec(layers=(1,), operator="ablate", lam=1.0).with_vectors(random_vectors([1], HIDDEN, seed=2)),
        add.with_lam(0.0),
        SteeringSpec(layers=(2, 3), preserve_norm=True, start_position=3, lam=-1.5).with_vectors(
            random_vectors([2, 3], HIDDEN, seed=3, norm=4.0)),
        SteeringSpec(layers=(2,), operator="conditional", condition=_condition(model, tokenizer), lam=3.0).with_vectors(
            random_vectors([2], HIDDEN, seed=4, norm=4.0)),
    ]


def _batch(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    ids = [tokenizer(text)["input_ids"] for text in SAMPLE_TEXTS]
    return left_pad(ids, tokenizer.eos_token_id)


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_each_group_of_a_stacked_batch_is_steered_as_alone(family, tokenizer) -> None:
    """Blocks that return a tensor or a tuple (llama, GPT-2, Falcon) alike."""
    model = _model(family)
    ids, mask = _batch(tokenizer)
    n, runs = ids.shape[0], _runs(model, tokenizer)
    with torch.no_grad(), steer_rows(model, runs, n):
        stacked = model(input_ids=ids.repeat(len(runs), 1), attention_mask=mask.repeat(len(runs), 1)).logits
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask).logits
    for i, spec in enumerate(runs):
        with torch.no_grad():
            if spec is None:
                want = plain
            else:
                with steer(model, spec):
                    want = model(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(stacked[i * n : (i + 1) * n], want, rtol=1e-5, atol=1e-5)
    real = mask.bool()
    moved = [(stacked[i * n : (i + 1) * n] - plain).abs()[real].max().item() for i in range(len(runs))]
    assert moved[0] < 1e-5 and moved[3] < 1e-5  # unsteered and lambda 0
    assert min(moved[1], moved[2], moved[4], moved[5]) > 1e-2  # the others really steer
    # the gate decided per prompt: some of the conditional group's rows moved, some did not
    gated = (stacked[5 * n :] - plain).abs().amax(dim=(1, 2)) > 1e-4
    assert 0 < int(gated.sum()) < n


def test_greedy_runs_equal_each_run_generated_alone(model, tokenizer) -> None:
    runs = _runs(model, tokenizer)
    calls = []
    generate = model.generate

    def counted(**kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return generate(**kwargs)

    for batch_size, expected in ((8, [8, 8, 8]), (3, [3] * 6 + [3, 3])):
        calls.clear()
        model.generate = counted
        try:
            got = greedy_runs(model, tokenizer, PROMPTS, runs, max_new_tokens=8, batch_size=batch_size)
        finally:
            del model.generate
        # 4 prompts: in one batch of 4, two runs per call (3 calls); in batches of 3 and 1,
        # one run per call for the 3 and three runs per call for the single prompt
        assert calls == expected
        for spec, continuations in zip(runs, got, strict=True):
            alone = greedy_continuations(model, tokenizer, PROMPTS, spec, spec.lam if spec else 0.0,
                                         max_new_tokens=8, batch_size=batch_size)
            assert continuations == alone
    assert got[1] != got[0]  # steering changed the continuations


def test_steer_rows_checks_its_batch(model, tokenizer) -> None:
    ids, mask = _batch(tokenizer)
    spec = _runs(model, tokenizer)[1]
    with pytest.raises(ModelError, match="the batch has"), torch.no_grad(), steer_rows(model, [spec, None], 3):
        model(input_ids=ids, attention_mask=mask)
    with pytest.raises(ConfigError, match="rows"), steer_rows(model, [spec], 0):
        pass
    # only unsteered runs: no hooks at all
    with steer_rows(model, [None, spec.with_lam(0.0)], 2):
        assert not any(block._forward_hooks for block in model.model.layers)
