"""Hidden-state extraction against independently computed forward passes, on tiny random models."""

from __future__ import annotations

import functools
import logging

import numpy as np
import pytest
import torch
import transformers
from random_models import SAMPLE_TEXTS, VOCAB, bpe_tokenizer

from driftlib.core.errors import ConfigError, DataError, ModelError, NumericsError
from driftlib.model.forward import extract_hidden_states, record_block_outputs
from driftlib.model.layers import find_decoder_layers

TEXTS = SAMPLE_TEXTS


def _tokenizer(bos: bool = True) -> transformers.PreTrainedTokenizerFast:
    return bpe_tokenizer(TEXTS, bos=bos)


FAMILIES: dict[str, transformers.PretrainedConfig] = {
    "llama": transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2),
    "mistral": transformers.MistralConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2),
    "qwen2": transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2),
    "phi3": transformers.Phi3Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, pad_token_id=0),
    "gemma2": transformers.Gemma2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=8, attn_implementation="eager"),
    "gpt2": transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=128),
    "gpt_neox": transformers.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4),
    "falcon": transformers.FalconConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4),
}
BLOCK_PATHS = {"gpt2": "transformer.h", "falcon": "transformer.h", "gpt_neox": "gpt_neox.layers"}


def _model(family: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(FAMILIES[family]).eval()


def _hooks(model: torch.nn.Module) -> list[list[int]]:
    """Ids of the forward hooks on each block (transformers installs its own capture hooks lazily)."""
    return [list(block._forward_hooks) for block in find_decoder_layers(model)]


@pytest.fixture(scope="module")
def tokenizer() -> transformers.PreTrainedTokenizerFast:
    return _tokenizer()


@pytest.fixture(scope="module")
def llama() -> torch.nn.Module:
    return _model("llama")


def _reference(model: torch.nn.Module, tokenizer: object, text: str, layer: int, pooling: str, max_length: int = 256) -> np.ndarray:
    """One text alone, no padding: block output read by a hook registered here, pooled by hand."""
    ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
    captured: list[torch.Tensor] = []
    handle = find_decoder_layers(model)[layer].register_forward_hook(
        lambda module, args, output: captured.append(output[0] if isinstance(output, tuple) else output)
    )
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]))
    finally:
        handle.remove()
    states = captured[0][0].double().numpy()  # [t, d]
    if pooling == "last":
        return states[-1]
    return (states[1:] if len(ids) > 1 else states).mean(axis=0)


def test_block_outputs_match_hidden_states_except_after_final_norm(llama: torch.nn.Module, tokenizer: object) -> None:
    ids = torch.tensor([tokenizer(TEXTS[0])["input_ids"]])
    with torch.no_grad():
        llama(input_ids=ids, output_hidden_states=True)  # let transformers install its own hooks first
    before = _hooks(llama)
    with record_block_outputs(llama, [0, 1, 2]) as store, torch.no_grad():
        out = llama(input_ids=ids, output_hidden_states=True)
    for layer in (0, 1):
        torch.testing.assert_close(store[layer], out.hidden_states[layer + 1])
    last = store[2]
    assert not torch.allclose(last, out.hidden_states[-1], atol=1e-3)
    with torch.no_grad():
        torch.testing.assert_close(llama.model.norm(last), out.hidden_states[-1])
    assert _hooks(llama) == before


def test_record_block_outputs_removes_hooks_on_exception(llama: torch.nn.Module) -> None:
    before = _hooks(llama)
    with pytest.raises(RuntimeError, match="boom"), record_block_outputs(llama, [-1]):
        assert len(llama.model.layers[2]._forward_hooks) == len(before[2]) + 1
        raise RuntimeError("boom")
    assert _hooks(llama) == before


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_extraction_equals_independent_single_text_passes(llama: torch.nn.Module, tokenizer: object, pooling: str) -> None:
    got = extract_hidden_states(llama, tokenizer, TEXTS, [1, -1], pooling=pooling, batch_size=3, progress=False)
    assert got.shape == (len(TEXTS), 2, 32) and got.dtype == np.float32
    for row, text in enumerate(TEXTS):  # original order, although extraction sorts by length
        for column, layer in enumerate([1, 2]):
            np.testing.assert_allclose(got[row, column], _reference(llama, tokenizer, text, layer, pooling), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_batched_equals_one_at_a_time(llama: torch.nn.Module, tokenizer: object, pooling: str) -> None:
    batched = extract_hidden_states(llama, tokenizer, TEXTS, [0, 1, 2], pooling=pooling, batch_size=16, progress=False)
    single = extract_hidden_states(llama, tokenizer, TEXTS, [0, 1, 2], pooling=pooling, batch_size=1, progress=False)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert np.abs(batched[0] - batched[2]).max() > 1e-3  # different texts give different states


def test_skip_first_changes_mean_pool(llama: torch.nn.Module, tokenizer: object) -> None:
    skipped = extract_hidden_states(llama, tokenizer, TEXTS[:1], [1], progress=False)
    kept = extract_hidden_states(llama, tokenizer, TEXTS[:1], [1], skip_first=False, progress=False)
    ids = tokenizer(TEXTS[0])["input_ids"]
    with record_block_outputs(llama, [1]) as store, torch.no_grad():
        llama(input_ids=torch.tensor([ids]))
    np.testing.assert_allclose(kept[0, 0], store[1][0].mean(dim=0).numpy(), atol=1e-5)
    np.testing.assert_allclose(skipped[0, 0], store[1][0, 1:].mean(dim=0).numpy(), atol=1e-5)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_families_blocks_and_extraction(family: str, tokenizer: object) -> None:
    model = _model(family)
    expected = model
    for name in BLOCK_PATHS.get(family, "model.layers").split("."):
        expected = getattr(expected, name)
    assert find_decoder_layers(model) is expected
    texts = TEXTS[:5]
    batched = extract_hidden_states(model, tokenizer, texts, [0, 2], batch_size=5, progress=False, model_name=family)
    single = extract_hidden_states(model, tokenizer, texts, [0, 2], batch_size=1, progress=False)
    np.testing.assert_allclose(batched, single, atol=1e-5, rtol=1e-4)
    for row in (0, 1):
        np.testing.assert_allclose(batched[row, 0], _reference(model, tokenizer, texts[row], 0, "mean"), atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(batched[row, 1], _reference(model, tokenizer, texts[row], 2, "mean"), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layer", [1, 2])
def test_forward_stops_after_deepest_block(llama: torch.nn.Module, tokenizer: object, layer: int) -> None:
    calls: dict[str, int] = {"norm": 0, "lm_head": 0, "later_block": 0}

    def counter(name: str):  # noqa: ANN202
        def hook(module: torch.nn.Module, args: object, output: object) -> None:
            calls[name] += 1

        return hook

    before = _hooks(llama)
    handles = [
        llama.model.norm.register_forward_hook(counter("norm")),
        llama.lm_head.register_forward_hook(counter("lm_head")),
        llama.model.layers[2].register_forward_hook(counter("later_block")),
    ]
    try:
        extract_hidden_states(llama, tokenizer, TEXTS, [layer], batch_size=2, progress=False)
    finally:
        for handle in handles:
            handle.remove()
    assert calls["norm"] == 0 and calls["lm_head"] == 0
    # block 2 runs (4 batches) only when it is the block asked for
    assert calls["later_block"] == (4 if layer == 2 else 0)
    assert _hooks(llama) == before


def test_out_of_memory_halves_batch_and_retries(llama: torch.nn.Module, tokenizer: object, caplog: pytest.LogCaptureFixture) -> None:
    expected = extract_hidden_states(llama, tokenizer, TEXTS, [1], batch_size=8, progress=False)
    sizes: list[int] = []
    original = llama.forward

    @functools.wraps(original)
    def forward(*args: object, **kwargs: object) -> object:
        size = kwargs["input_ids"].shape[0]  # type: ignore[union-attr]
        sizes.append(size)
        if size > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(*args, **kwargs)

    llama.forward = forward  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.WARNING, logger="driftlib.model.forward"):
            got = extract_hidden_states(llama, tokenizer, TEXTS, [1], batch_size=8, progress=False)
    finally:
        del llama.forward
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert sizes[:3] == [7, 4, 2]  # 7 texts in the first batch of 8, then halved twice
    assert "out of memory at batch size 8; retrying with 4" in caplog.text
    assert "out of memory at batch size 4; retrying with 2" in caplog.text


def test_out_of_memory_at_batch_size_one_raises(llama: torch.nn.Module, tokenizer: object) -> None:
    original = llama.forward

    @functools.wraps(original)
    def forward(*args: object, **kwargs: object) -> object:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    llama.forward = forward  # type: ignore[method-assign]
    try:
        with pytest.raises(ModelError, match="out of memory .* one text"):
            extract_hidden_states(llama, tokenizer, TEXTS, [1], batch_size=2, progress=False)
    finally:
        del llama.forward


def test_nan_names_model_layer_and_row(llama: torch.nn.Module, tokenizer: object) -> None:
    target = 3
    others = {t for row, text in enumerate(TEXTS) if row != target for t in tokenizer(text)["input_ids"]}
    unique = [t for t in tokenizer(TEXTS[target])["input_ids"][1:] if t not in others]
    assert unique, "test setup: the target text needs a token no other text has"
    poisoned = unique[0]
    seen: list[torch.Tensor] = []

    def grab_ids(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen[:] = [args[0]]

    def poison(module: torch.nn.Module, args: object, output: torch.Tensor) -> torch.Tensor:
        return output.masked_fill((seen[0] == poisoned).unsqueeze(-1), float("nan"))

    handles = [llama.model.embed_tokens.register_forward_pre_hook(grab_ids), llama.model.layers[0].register_forward_hook(poison)]
    try:
        with pytest.raises(NumericsError) as info:
            extract_hidden_states(llama, tokenizer, TEXTS, [1, 2], batch_size=4, progress=False, model_name="tiny-llama")
    finally:
        for handle in handles:
            handle.remove()
    message = str(info.value)
    assert "tiny-llama" in message and "layer 1" in message
    assert f"rows [{target}]" in message
    assert "bfloat16" in message


def test_tokenizer_left_untouched_and_eos_used_for_padding(llama: torch.nn.Module) -> None:
    tok = _tokenizer()
    tok.padding_side, tok.truncation_side = "right", "right"
    assert tok.pad_token is None
    extract_hidden_states(llama, tok, TEXTS, [1], progress=False)
    assert (tok.padding_side, tok.truncation_side, tok.pad_token) == ("right", "right", None)


def test_left_truncation_keeps_the_differing_end(llama: torch.nn.Module, tokenizer: object) -> None:
    shared = "Human: How do I bake bread? Assistant: Mix flour, water, salt and yeast. Human: and then? Assistant: "
    pair = [shared + "Knead it well.", shared + "I will not help."]
    left = extract_hidden_states(llama, tokenizer, pair, [2], max_length=8, progress=False)
    right = extract_hidden_states(llama, tokenizer, pair, [2], max_length=8, truncation_side="right", progress=False)
    assert np.abs(left[0] - left[1]).max() > 1e-4
    np.testing.assert_allclose(right[0], right[1], atol=1e-6)  # right truncation makes the pair identical
    # left truncation keeps <s> and the last 7 tokens
    ids = tokenizer(pair[0])["input_ids"]
    kept = [ids[0], *ids[-7:]]
    with record_block_outputs(llama, [2]) as store, torch.no_grad():
        llama(input_ids=torch.tensor([kept]))
    np.testing.assert_allclose(left[0, 0], store[2][0, 1:].mean(dim=0).numpy(), atol=1e-5)


def test_bad_arguments(llama: torch.nn.Module, tokenizer: object) -> None:
    with pytest.raises(ConfigError, match="pooling"):
        extract_hidden_states(llama, tokenizer, TEXTS, [1], pooling="max", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="truncation_side"):
        extract_hidden_states(llama, tokenizer, TEXTS, [1], truncation_side="middle", progress=False)
    with pytest.raises(ConfigError, match="batch_size"):
        extract_hidden_states(llama, tokenizer, TEXTS, [1], batch_size=0, progress=False)
    with pytest.raises(ConfigError, match="layers"):
        extract_hidden_states(llama, tokenizer, TEXTS, [3], progress=False)
    with pytest.raises(DataError, match=r"rows \[1\]"):
        extract_hidden_states(llama, _tokenizer(bos=False), ["fine", ""], [1], progress=False)
    empty = extract_hidden_states(llama, tokenizer, [], [0, 1], progress=False)
    assert empty.shape == (0, 2, 32)


def test_training_mode_restored(tokenizer: object) -> None:
    model = _model("gpt2")
    model.train()
    a = extract_hidden_states(model, tokenizer, TEXTS[:3], [1], progress=False)
    b = extract_hidden_states(model, tokenizer, TEXTS[:3], [1], progress=False)
    np.testing.assert_array_equal(a, b)  # dropout was off during extraction
    assert model.training


def test_tokenised_once_and_batches_run_longest_first(llama: torch.nn.Module, tokenizer: object) -> None:
    lengths = [len(ids) for ids in tokenizer(TEXTS)["input_ids"]]
    shapes: list[tuple[int, int]] = []
    handle = llama.model.embed_tokens.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))

    class Counting:
        """Forwards everything to the tokenizer, counting calls."""

        calls = 0

        def __getattr__(self, name: str) -> object:
            return getattr(tokenizer, name)

        def __setattr__(self, name: str, value: object) -> None:
            setattr(tokenizer, name, value)

        def __call__(self, *args: object, **kwargs: object) -> object:
            type(self).calls += 1
            return tokenizer(*args, **kwargs)

    try:
        extract_hidden_states(llama, Counting(), TEXTS, [0], batch_size=2, progress=False)
    finally:
        handle.remove()
    assert Counting.calls == 1
    longest_first = sorted(lengths, reverse=True)
    # batches of 2 in order of decreasing length, each padded to its own longest text
    assert shapes == [(len(longest_first[i : i + 2]), longest_first[i]) for i in range(0, len(TEXTS), 2)]


def test_token_id_rows_and_pooled_tail_spans(llama: torch.nn.Module, tokenizer: object) -> None:
    """Rows given as token ids, pooled over their last k tokens only, in a padded batch, equal a
    hand pool of one unpadded pass; a string row beside them is tokenised as usual."""
    ids = [tokenizer(t)["input_ids"] for t in TEXTS[:3]]
    spans = [2, 1, 3]
    got = extract_hidden_states(llama, tokenizer, ids + [TEXTS[3]], [1], pooling="mean", skip_first=False,
                                batch_size=4, pool_last=spans + [len(tokenizer(TEXTS[3])["input_ids"])],
                                max_length=None, progress=False)
    for row, (seq, k) in enumerate(zip(ids, spans, strict=True)):
        captured: list[torch.Tensor] = []
        handle = find_decoder_layers(llama)[1].register_forward_hook(
            lambda module, args, output: captured.append(output[0] if isinstance(output, tuple) else output))
        try:
            with torch.no_grad():
                llama(input_ids=torch.tensor([seq]))
        finally:
            handle.remove()
        want = captured[0][0].double().numpy()[-k:].mean(axis=0)
        np.testing.assert_allclose(got[row, 0], want, atol=1e-5, rtol=1e-4)
    # a string row whose span is the whole text: the same as no span at all
    plain = extract_hidden_states(llama, tokenizer, [TEXTS[3]], [1], skip_first=False, max_length=None, progress=False)
    np.testing.assert_allclose(got[3], plain[0], atol=1e-5, rtol=1e-4)
    with pytest.raises(DataError, match="span longer"):
        extract_hidden_states(llama, tokenizer, ids[:1], [1], pool_last=[len(ids[0]) + 1], progress=False)
    with pytest.raises(ConfigError, match="one positive span"):
        extract_hidden_states(llama, tokenizer, ids[:1], [1], pool_last=[0], progress=False)
    with pytest.raises(DataError, match="list of token ids"):
        extract_hidden_states(llama, tokenizer, [[1.5, 2]], [1], progress=False)
