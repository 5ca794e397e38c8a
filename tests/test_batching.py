"""Batching by a token budget and packed rows, against each text run alone and pooled by hand."""

from __future__ import annotations

import os

import functools
import logging

import numpy as np
import pytest
import torch
import transformers
from random_models import SAMPLE_TEXTS, VOCAB, bpe_tokenizer, random_vectors

from driftlib.core.errors import ConfigError, NumericsError
from driftlib.model.forward import build_batch, extract_hidden_states, pack_rows, packing_works, plan_batches
from driftlib.model.layers import find_decoder_layers
from driftlib.steer.hooks import steer
from driftlib.steer.sweep import sweep_hidden_states

TEXTS = SAMPLE_TEXTS + [
    "Human: What is the capital of France? Assistant: Paris, a city on the Seine.",
    "yes",
    "Numbers 1 2 3 4 5 6 7 8 9 10 and more words to make it long enough for packing tests.",
]
_SMALL = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4)
FAMILIES: dict[str, transformers.PretrainedConfig] = {
    "llama": transformers.LlamaConfig(**_SMALL, num_key_value_heads=2),
    "qwen2": transformers.Qwen2Config(**_SMALL, num_key_value_heads=2),
    "gemma2": transformers.Gemma2Config(**_SMALL, num_key_value_heads=2, head_dim=8, attn_implementation="eager"),
    "gpt2": transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=128),
    "falcon": transformers.FalconConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4),
}


def _model(family: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(FAMILIES[family]).eval()


@pytest.fixture(scope="module")
def tokenizer() -> transformers.PreTrainedTokenizerFast:
    return bpe_tokenizer(TEXTS)


@pytest.fixture(scope="module")
def llama() -> torch.nn.Module:
    return _model("llama")


def _alone(model: torch.nn.Module, ids: list[int], layers: list[int]) -> list[np.ndarray]:
    """Block outputs ``[t, d]`` (float64) of one text run alone, no padding, read by hooks registered here."""
    captured: dict[int, torch.Tensor] = {}
    blocks = find_decoder_layers(model)
    handles = [blocks[layer].register_forward_hook(
        lambda module, args, output, layer=layer: captured.__setitem__(layer, output[0] if isinstance(output, tuple) else output))
        for layer in layers]
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]))
    finally:
        for handle in handles:
            handle.remove()
    return [captured[layer][0].double().numpy() for layer in layers]


def _hand_pool(states: np.ndarray, pooling: str, skip_first: bool, span: int | None = None) -> np.ndarray:
    """Pool ``states [t, d]`` by hand: the last token, or the mean over the last ``span`` tokens
    (all when None), leaving out the first of them when ``skip_first`` and more than one."""
    if pooling == "last":
        return states[-1]
    part = states[-span:] if span is not None else states
    if skip_first and len(part) > 1:
        part = part[1:]
    return part.mean(axis=0)


def _reference(model, tokenizer, texts, layers, pooling, skip_first, spans=None) -> np.ndarray:
    out = []
    for row, text in enumerate(texts):
        ids = tokenizer(text)["input_ids"]
        per_layer = _alone(model, ids, layers)
        out.append([_hand_pool(s, pooling, skip_first, None if spans is None else spans[row]) for s in per_layer])
    return np.asarray(out)


# ---------------------------------------------------------------------------------------------
# planning and layout


def test_plan_by_count_by_budget_and_packed() -> None:
    lengths = [10, 3, 7, 7, 2, 5]
    order = sorted(range(6), key=lambda r: (-lengths[r], r))  # [0, 2, 3, 5, 1, 4]
    assert plan_batches(lengths, order, batch_size=4) == [[[0], [2], [3], [5]], [[1], [4]]]
    # budget 20: the first batch is padded to 10 -> 2 rows; then 7 -> 2 rows; then 5 -> 4 rows (only 2 left)
    assert plan_batches(lengths, order, tokens_per_batch=20) == [[[0], [2]], [[3], [5]], [[1], [4]]]
    # a budget below the longest text still runs it, alone
    assert plan_batches(lengths, order, tokens_per_batch=4) == [[[r]] for r in order]
    # packed into rows of 10 tokens (best fit decreasing): [10], [7, 3], [7, 2], [5]; two rows per batch of 20
    assert pack_rows(lengths, order, 10) == [[0], [2, 1], [3, 4], [5]]
    assert plan_batches(lengths, order, tokens_per_batch=20, packing=True) == [[[0], [2, 1]], [[3, 4], [5]]]


def test_best_fit_puts_a_text_in_the_fullest_row_with_room() -> None:
    lengths = [6, 5, 4, 1]  # rows of 6: [6]; [5]; 4 opens a row (no room); 1 goes to the fullest with room: 5's row
    assert pack_rows(lengths, [0, 1, 2, 3], 6) == [[0], [1, 3], [2]]
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(1, 50, 300))
    order = sorted(range(300), key=lambda r: -lengths[r])
    rows = pack_rows(lengths, order, 50)
    assert sorted(t for row in rows for t in row) == list(range(300))
    assert all(sum(lengths[t] for t in row) <= 50 for row in rows)
    # no two rows could be merged (a text opens a row only when it fits in no other)
    fills = sorted(sum(lengths[t] for t in row) for row in rows)
    assert fills[0] + fills[1] > 50
    # and the count is within best-fit-decreasing's bound 11/9 OPT + 1 of a lower bound of OPT
    lower = max(int(np.ceil(sum(lengths) / 50)), sum(n > 25 for n in lengths))
    assert len(rows) <= 11 / 9 * lower + 1


def test_packed_batch_layout_by_hand() -> None:
    ids = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    batch = build_batch(ids, [[2], [0, 1]], 0, packed=True, skip_first=True)
    assert batch.texts == [2, 0, 1]
    assert batch.attention_mask is None
    assert batch.input_ids.tolist() == [[6, 7, 8, 9, 0], [1, 2, 3, 4, 5]]
    # positions restart at 0 for every text and for the padding
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 0], [0, 1, 2, 0, 1]]
    w = batch.weights.numpy()  # [r=2, s=2, t=5]
    np.testing.assert_allclose(w[0, 0], [0, 1 / 3, 1 / 3, 1 / 3, 0])
    np.testing.assert_allclose(w[0, 1], 0)
    np.testing.assert_allclose(w[1, 0], [0, 0.5, 0.5, 0, 0])
    np.testing.assert_allclose(w[1, 1], [0, 0, 0, 0, 1])
    assert batch.slots.tolist() == [0, 2, 3]
    assert batch.last.tolist() == [3, 5 + 2, 5 + 4]
    # a tail span of 2 tokens, no skip: the last two tokens of each text
    spans = build_batch(ids, [[0, 1]], 0, packed=True, pool_last=[2, 2, 2], skip_first=False)
    np.testing.assert_allclose(spans.weights.numpy()[0], [[0, 0.5, 0.5, 0, 0], [0, 0, 0, 0.5, 0.5]])


def test_padded_batch_layout_by_hand() -> None:
    batch = build_batch([[1, 2, 3], [4]], [[0], [1]], 9, skip_first=True)
    assert batch.input_ids.tolist() == [[1, 2, 3], [9, 9, 4]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch.position_ids.tolist() == [[0, 1, 2], [0, 0, 0]]
    np.testing.assert_allclose(batch.weights.numpy()[:, 0], [[0, 0.5, 0.5], [0, 0, 1]])
    assert batch.last.tolist() == [2, 5]


# ---------------------------------------------------------------------------------------------
# the same pooled states as each text alone


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_packed_and_budget_batches_equal_each_text_alone(family: str, tokenizer: object) -> None:
    model = _model(family)
    assert packing_works(model, 2)
    for pooling, skip_first in [("mean", True), ("mean", False), ("last", True)]:
        want = _reference(model, tokenizer, TEXTS, [0, 2], pooling, skip_first)
        for kw in [dict(tokens_per_batch=64), dict(tokens_per_batch=64, packing=True), dict(tokens_per_batch=10_000, packing=True)]:
            got = extract_hidden_states(model, tokenizer, TEXTS, [0, 2], pooling=pooling, skip_first=skip_first,
                                        progress=False, **kw)
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4, err_msg=f"{family} {pooling} {kw}")


def test_packed_rows_really_hold_several_texts(llama: torch.nn.Module, tokenizer: object) -> None:
    shapes: list[tuple[int, int]] = []
    handle = llama.model.embed_tokens.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
    try:
        extract_hidden_states(llama, tokenizer, TEXTS, [1], tokens_per_batch=10_000, packing=True, progress=False)
    finally:
        handle.remove()
    lengths = [len(ids) for ids in tokenizer(TEXTS)["input_ids"]]
    assert len(shapes) == 4  # the three short passes of packing_works, then one forward pass for all texts
    rows, width = shapes[-1]
    assert width == max(lengths) and rows < len(TEXTS) and rows * width >= sum(lengths)


def test_pooled_tail_spans_in_packed_rows(llama: torch.nn.Module, tokenizer: object) -> None:
    lengths = [len(ids) for ids in tokenizer(TEXTS)["input_ids"]]
    spans = [max(1, n // 2) for n in lengths]
    want = _reference(llama, tokenizer, TEXTS, [1], "mean", False, spans)
    got = extract_hidden_states(llama, tokenizer, TEXTS, [1], skip_first=False, pool_last=spans, tokens_per_batch=10_000,
                                packing=True, progress=False)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def test_model_that_mixes_packed_texts_falls_back_to_padding(llama: torch.nn.Module, tokenizer: object,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # without transformers' packed-sequence detection, texts in one row would attend to each other
    monkeypatch.setattr(transformers.masking_utils, "find_packed_sequence_indices", lambda position_ids: None)
    assert not packing_works(llama, 1)
    want = _reference(llama, tokenizer, TEXTS, [1], "mean", True)
    got = extract_hidden_states(llama, tokenizer, TEXTS, [1], tokens_per_batch=10_000, packing=True, progress=False)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def test_budget_halves_on_out_of_memory(llama: torch.nn.Module, tokenizer: object, caplog: pytest.LogCaptureFixture) -> None:
    want = _reference(llama, tokenizer, TEXTS, [1], "mean", True)
    original = llama.forward
    tokens: list[int] = []

    @functools.wraps(original)
    def forward(*args: object, **kwargs: object) -> object:
        shape = kwargs["input_ids"].shape  # type: ignore[union-attr]
        tokens.append(shape[0] * shape[1])
        if shape[0] * shape[1] > 60 and shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(*args, **kwargs)

    llama.forward = forward  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.WARNING, logger="driftlib.model.forward"):
            got = extract_hidden_states(llama, tokenizer, TEXTS, [1], tokens_per_batch=400, packing=True, progress=False)
    finally:
        del llama.forward
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
    assert "out of memory at 400 tokens per batch; retrying with 200" in caplog.text


def test_nan_in_a_packed_row_names_its_text(llama: torch.nn.Module, tokenizer: object) -> None:
    block = find_decoder_layers(llama)[1]

    def poison(module: torch.nn.Module, args: object, output: object) -> object:
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        hidden[0, -2] = float("nan")  # a real token of the last text of the first row
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = block.register_forward_hook(poison)
    try:
        with pytest.raises(NumericsError, match="layer 1"):
            extract_hidden_states(llama, tokenizer, TEXTS, [1], tokens_per_batch=10_000, packing=True, progress=False)
    finally:
        handle.remove()


def test_bad_token_budget(llama: torch.nn.Module, tokenizer: object) -> None:
    for bad in (0, -5, 1.5, True):
        with pytest.raises(ConfigError, match="tokens_per_batch"):
            extract_hidden_states(llama, tokenizer, TEXTS, [1], tokens_per_batch=bad, progress=False)
        with pytest.raises(ConfigError, match="tokens_per_batch"):
            sweep_hidden_states(llama, tokenizer, TEXTS, {0: np.ones(32, np.float32)}, [1.0], [2], tokens_per_batch=bad,
                                progress=False)


# ---------------------------------------------------------------------------------------------
# the sweep


@pytest.mark.parametrize("family", ["llama", "gpt2", "falcon"])
def test_packed_sweep_equals_each_text_alone_steered(family: str, tokenizer: object) -> None:
    model = _model(family)
    vectors = random_vectors([1], 32, seed=3, norm=4.0)
    lambdas = [0.0, 1.5, -2.0]
    got = sweep_hidden_states(model, tokenizer, TEXTS, vectors, lambdas, [2], tokens_per_batch=10_000, packing=True,
                              progress=False)
    budget = sweep_hidden_states(model, tokenizer, TEXTS, vectors, lambdas, [2], tokens_per_batch=50, progress=False)
    for j, lam in enumerate(lambdas):
        with steer(model, vectors, lam):
            want = _reference(model, tokenizer, TEXTS, [2], "mean", True)
        np.testing.assert_allclose(got[j], want, atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(budget[j], want, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# compiled blocks (compile=True): the same states as each text alone, blocks put back afterwards


def test_packed_rows_padded_to_a_fixed_width_by_hand() -> None:
    ids = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    batch = build_batch(ids, [[2], [0, 1]], 0, packed=True, width=7)
    assert batch.input_ids.tolist() == [[6, 7, 8, 9, 0, 0, 0], [1, 2, 3, 4, 5, 0, 0]]
    # the padding tail is a sequence of its own from position 0, which no text sees
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 0, 1, 2], [0, 1, 2, 0, 1, 0, 1]]
    np.testing.assert_allclose(batch.weights.numpy()[1, 1], [0, 0, 0, 0, 1, 0, 0])
    assert batch.last.tolist() == [3, 7 + 2, 7 + 4]
    # a width below the fullest row is no limit
    assert build_batch(ids, [[2], [0, 1]], 0, packed=True, width=2).input_ids.shape == (2, 5)


def _dynamo_frames() -> int:
    from torch._dynamo.utils import counters

    return sum(counters["frames"].values())


def test_compiled_blocks_equal_each_text_alone_and_are_put_back(tokenizer: object, monkeypatch: pytest.MonkeyPatch) -> None:
    # dynamo traces the blocks (hooks and StopForward stay eager around them); the "eager" backend runs the
    # traced graphs without code generation, so this checks the plumbing fast and with no compiler
    import driftlib.model.forward as forward

    monkeypatch.setattr(forward, "COMPILE_OPTIONS", {"backend": "eager", "dynamic": None})
    model = _model("llama", seed=1)
    blocks = find_decoder_layers(model)
    widths: list[int] = []
    handle = model.model.embed_tokens.register_forward_pre_hook(lambda module, args: widths.append(args[0].shape[1]))
    frames = _dynamo_frames()
    try:
        want = _reference(model, tokenizer, TEXTS, [0, 2], "mean", True)
        widths.clear()
        packed = extract_hidden_states(model, tokenizer, TEXTS, [0, 2], tokens_per_batch=40, packing=True, compile=True,
                                       progress=False)
        packed_widths = widths[3:]  # after packing_works' three short passes
        padded = extract_hidden_states(model, tokenizer, TEXTS, [0, 2], batch_size=3, compile=True, progress=False)
    finally:
        handle.remove()
    assert _dynamo_frames() > frames  # the blocks really went through torch.compile
    np.testing.assert_allclose(packed, want, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(padded, want, atol=1e-5, rtol=1e-4)
    longest = max(len(ids) for ids in tokenizer(TEXTS)["input_ids"])
    assert len(packed_widths) > 1 and set(packed_widths) == {longest}  # every packed batch has one shape
    assert all("forward" not in vars(block) for block in blocks)  # the eager forward is back

    vectors = random_vectors([1], 32, seed=3, norm=4.0)
    lambdas = [0.0, 1.5]
    swept = sweep_hidden_states(model, tokenizer, TEXTS, vectors, lambdas, [2], tokens_per_batch=40, packing=True,
                                compile=True, progress=False)
    for j, lam in enumerate(lambdas):
        with steer(model, vectors, lam):
            np.testing.assert_allclose(swept[j], _reference(model, tokenizer, TEXTS, [2], "mean", True), atol=1e-5, rtol=1e-4)
    assert all("forward" not in vars(block) for block in blocks)


@pytest.mark.skipif(not os.environ.get("DRIFTLIB_COMPILE_TESTS"),
                    reason="the real compiler costs ~50 s cold on 2 cores; set DRIFTLIB_COMPILE_TESTS=1 to run it "
                           "(the dynamo trace of the compiled path is tested above with the eager backend)")
def test_compiled_extraction_with_inductor_on_cpu(llama: torch.nn.Module, tokenizer: object) -> None:
    # the real compiler (inductor, C++ code on a CPU): one packed batch, so one graph compiles (~10-40 s cold)
    import shutil

    if not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile (dynamo) is not supported on this Python/torch")
    if not any(shutil.which(cxx) for cxx in ("g++", "c++", "clang++")):
        pytest.skip("no C++ compiler on PATH: torch.compile's inductor backend cannot build CPU kernels here")
    want = extract_hidden_states(llama, tokenizer, TEXTS, [1], tokens_per_batch=10_000, packing=True, progress=False)
    got = extract_hidden_states(llama, tokenizer, TEXTS, [1], tokens_per_batch=10_000, packing=True, compile=True,
                                progress=False)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(got, _reference(llama, tokenizer, TEXTS, [1], "mean", True), atol=1e-5, rtol=1e-4)
