"""Steering hooks against hand-computed block outputs, on tiny random models (no hub access)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from driftlib.core.errors import ConfigError
from driftlib.model.layers import find_decoder_layers
from driftlib.steer.hooks import _blocks_owner, steer

VOCAB = 300
D = 32
FAMILIES: dict[str, transformers.PretrainedConfig] = {
    "llama": transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=D, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2),
    "gemma2": transformers.Gemma2Config(vocab_size=VOCAB, hidden_size=D, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=8, attn_implementation="eager"),
    "gpt2": transformers.GPT2Config(vocab_size=VOCAB, n_embd=D, n_layer=3, n_head=4, n_positions=128, bos_token_id=1, eos_token_id=2),
    "falcon": transformers.FalconConfig(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=3, num_attention_heads=4),
}

# a left-padded batch of two prompts of different lengths (pad id 0)
IDS = torch.tensor([[0, 0, 0, 17, 42, 99, 7], [5, 23, 61, 88, 14, 120, 33]])
MASK = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])


def _model(family: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(FAMILIES[family]).eval()


def _vec(seed: int = 1, scale: float = 2.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(D) * scale).astype(np.float32)


@pytest.fixture(scope="module")
def llama() -> torch.nn.Module:
    return _model("llama")


def _logits(model: torch.nn.Module, ids: torch.Tensor = IDS, mask: torch.Tensor = MASK) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits


class _Capture:
    """Records, for one block, its input hidden states and kwargs and its (final, post-hook) output."""

    def __init__(self, block: torch.nn.Module) -> None:
        self.block = block
        self.inputs: list[torch.Tensor] = []
        self.kwargs: list[dict] = []
        self.outputs: list[object] = []

    def __enter__(self) -> _Capture:
        def pre(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            self.inputs.append(hidden.detach().clone())
            self.kwargs.append({k: v for k, v in kwargs.items() if k != "hidden_states"})

        def post(module, args, output):
            self.outputs.append(output)

        self.handles = [
            self.block.register_forward_pre_hook(pre, with_kwargs=True),
            self.block.register_forward_hook(post),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()

    @property
    def hidden(self) -> torch.Tensor:
        out = self.outputs[-1]
        return out if isinstance(out, torch.Tensor) else out[0]


def _hook_ids(model: torch.nn.Module) -> tuple[list[list[int]], list[int]]:
    blocks = find_decoder_layers(model)
    owner = _blocks_owner(model, blocks)
    return [list(b._forward_hooks) for b in blocks], list(owner._forward_pre_hooks)


def test_lam_zero_is_bit_identical_and_lam_one_is_not(llama: torch.nn.Module) -> None:
    plain = _logits(llama)
    vectors = {0: _vec(1), 1: _vec(2), 2: _vec(3)}
    with steer(llama, vectors, lam=0.0):
        zero = _logits(llama)
    with steer(llama, vectors, lam=0.0, start_position=2, preserve_norm=False):
        zero_from_2 = _logits(llama)
    with steer(llama, vectors, lam=1.0):
        one = _logits(llama)
    assert torch.equal(zero, plain)
    assert torch.equal(zero_from_2, plain)
    assert not torch.allclose(one, plain, atol=1e-3)  # the same hooks do act when lam != 0


def test_hooks_are_removed_on_exit_and_on_exception(llama: torch.nn.Module) -> None:
    _logits(llama)  # transformers may install its own hooks lazily on the first call
    before = _hook_ids(llama)
    plain = _logits(llama)
    with steer(llama, {1: _vec()}, lam=3.0, start_position=1):
        assert _hook_ids(llama) != before
        assert not torch.equal(_logits(llama), plain)
    assert _hook_ids(llama) == before
    assert torch.equal(_logits(llama), plain)

    with pytest.raises(RuntimeError, match="boom"):
        with steer(llama, {0: _vec(), 2: _vec(4)}, lam=3.0, start_position=0):
            _logits(llama)
            raise RuntimeError("boom")
    assert _hook_ids(llama) == before
    assert torch.equal(_logits(llama), plain)


def test_block_output_and_next_block_match_a_manual_computation(llama: torch.nn.Module) -> None:
    """Steer block 0: its output becomes h0 + lam*v, block 1 computes exactly block1(h0 + lam*v), and
    block 2 and the logits move too."""
    blocks = find_decoder_layers(llama)
    lam, v = 1.5, _vec(7)
    with _Capture(blocks[0]) as c0, _Capture(blocks[1]) as c1, _Capture(blocks[2]) as c2:
        _logits(llama)
    h0, h1, h2 = c0.hidden, c1.hidden, c2.hidden
    with steer(llama, {0: v}, lam=lam):
        with _Capture(blocks[0]) as s0, _Capture(blocks[1]) as s1, _Capture(blocks[2]) as s2:
            steered_logits = _logits(llama)

    expected_h0 = h0 + lam * torch.from_numpy(v)
    # the output of block 0 seen by a hook registered after steer's, and the input block 1 receives
    assert torch.equal(s0.hidden, expected_h0)
    assert torch.equal(s1.inputs[-1], expected_h0)
    # block 1 run by hand on the steered input, with the kwargs it received in the steered pass
    with torch.no_grad():
        manual = blocks[1](expected_h0, **s1.kwargs[-1])
    manual = manual if isinstance(manual, torch.Tensor) else manual[0]
    torch.testing.assert_close(s1.hidden, manual, rtol=0, atol=1e-6)
    assert not torch.allclose(s1.hidden, h1, atol=1e-4)
    assert not torch.allclose(s2.hidden, h2, atol=1e-4)
    assert not torch.allclose(steered_logits, _logits(llama), atol=1e-4)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2", "falcon"])
def test_generation_with_and_without_kv_cache_agree(family: str) -> None:
    model = _model(family)
    vectors = {1: _vec(5, scale=4.0)}
    kwargs = dict(input_ids=IDS, attention_mask=MASK, max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    plain = model.generate(**kwargs)
    prompt_len = IDS.shape[1]
    for start in (None, 2, prompt_len):
        with steer(model, vectors, lam=3.0, start_position=start):
            cached = model.generate(**kwargs, use_cache=True)
            uncached = model.generate(**kwargs, use_cache=False)
        assert torch.equal(cached, uncached), (family, start)
        assert not torch.equal(cached, plain), (family, start)  # steering changed the generation
    assert torch.equal(model.generate(**kwargs), plain)  # and nothing is left behind


@pytest.mark.parametrize("family", ["gpt2", "falcon"])
def test_gpt2_and_falcon_blocks_are_steered_and_restored(family: str) -> None:
    model = _model(family)
    blocks = find_decoder_layers(model)
    lam, v = 2.0, _vec(11)
    with _Capture(blocks[1]) as c:
        plain = _logits(model)
    returned_tuple = isinstance(c.outputs[-1], tuple)
    if family == "falcon":
        assert returned_tuple  # the tuple path is the one exercised here
    with steer(model, {1: v}, lam=lam):
        with _Capture(blocks[1]) as s:
            steered = _logits(model)
    assert type(s.outputs[-1]) is type(c.outputs[-1])
    if returned_tuple:
        assert len(s.outputs[-1]) == len(c.outputs[-1])
    assert torch.equal(s.hidden, c.hidden + lam * torch.from_numpy(v))
    assert not torch.allclose(steered, plain, atol=1e-4)
    assert torch.equal(_logits(model), plain)


def test_start_position_only_changes_later_positions(llama: torch.nn.Module) -> None:
    blocks = find_decoder_layers(llama)
    lam, v, start = 2.0, _vec(13), 4
    with _Capture(blocks[1]) as c:
        plain = _logits(llama)
    with steer(llama, {1: v}, lam=lam, start_position=start):
        with _Capture(blocks[1]) as s:
            steered = _logits(llama)
    # block 1's output: unchanged before `start` (padding included), + lam*v from `start` on
    assert torch.equal(s.hidden[:, :start], c.hidden[:, :start])
    assert torch.equal(s.hidden[:, start:], c.hidden[:, start:] + lam * torch.from_numpy(v))
    # causal model: logits before `start` are untouched, later ones move
    assert torch.equal(steered[:, :start], plain[:, :start])
    assert not torch.allclose(steered[:, start:], plain[:, start:], atol=1e-4)


def test_start_position_counts_tokens_in_the_kv_cache(llama: torch.nn.Module) -> None:
    """Positions continue across cached forward passes: run 5 tokens, then 2 more with the cache;
    with start_position=6 only the second new token (position 6) is steered."""
    blocks = find_decoder_layers(llama)
    lam, v = 2.0, _vec(17)
    first, second = IDS[:, :5], IDS[:, 5:]

    def run(steered: bool) -> tuple[torch.Tensor, torch.Tensor]:
        # steer's hook is registered first, so the capture sees the steered output
        with torch.no_grad(), steer(llama, {1: v}, lam=lam if steered else 0.0, start_position=6):
            with _Capture(blocks[1]) as cap:
                out = llama(input_ids=first, attention_mask=MASK[:, :5], use_cache=True)
                out2 = llama(input_ids=second, attention_mask=MASK, cache=out.cache, use_cache=True)
        return cap.hidden, out2.logits

    plain_h, plain_logits = run(False)
    steered_h, steered_logits = run(True)
    assert steered_h.shape[1] == 2
    assert torch.equal(steered_h[:, 0], plain_h[:, 0])  # position 5: not steered
    assert torch.equal(steered_h[:, 1], plain_h[:, 1] + lam * torch.from_numpy(v))  # position 6: steered
    assert torch.equal(steered_logits[:, 0], plain_logits[:, 0])
    # and the cached run agrees with one pass over the whole sequence
    with torch.no_grad(), steer(llama, {1: v}, lam=lam, start_position=6):
        full = llama(input_ids=IDS, attention_mask=MASK, use_cache=False).logits
    torch.testing.assert_close(steered_logits, full[:, 5:], rtol=1e-5, atol=1e-5)


def test_preserve_norm_keeps_each_tokens_norm(llama: torch.nn.Module) -> None:
    blocks = find_decoder_layers(llama)
    lam, v, start = 3.0, _vec(19), 3
    with _Capture(blocks[1]) as c:
        _logits(llama)
    with steer(llama, {1: v}, lam=lam, start_position=start, preserve_norm=True):
        with _Capture(blocks[1]) as s:
            _logits(llama)
    h, out = c.hidden, s.hidden
    torch.testing.assert_close(out.norm(dim=-1), h.norm(dim=-1), rtol=1e-5, atol=1e-6)
    assert torch.equal(out[:, :start], h[:, :start])
    # the direction is that of h + lam*v
    shifted = h[:, start:] + lam * torch.from_numpy(v)
    cos = torch.nn.functional.cosine_similarity(out[:, start:], shifted, dim=-1)
    torch.testing.assert_close(cos, torch.ones_like(cos), rtol=0, atol=1e-5)
    assert not torch.allclose(out[:, start:], h[:, start:], atol=1e-3)


def test_bfloat16_model_stays_bfloat16() -> None:
    model = _model("llama").to(torch.bfloat16)
    blocks = find_decoder_layers(model)
    lam, v = 2.0, _vec(23)
    with _Capture(blocks[1]) as c:
        plain = _logits(model)
    with steer(model, {1: v}, lam=lam):
        with _Capture(blocks[1]) as s:
            steered = _logits(model)
        generated = model.generate(input_ids=IDS, attention_mask=MASK, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert s.hidden.dtype == torch.bfloat16 and steered.dtype == plain.dtype == torch.bfloat16
    assert torch.equal(s.hidden, c.hidden + (lam * torch.from_numpy(v)).to(torch.bfloat16))
    assert generated.shape == (2, IDS.shape[1] + 3)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


def test_negative_layer_counts_from_the_end(llama: torch.nn.Module) -> None:
    blocks = find_decoder_layers(llama)
    v = _vec(29)
    with _Capture(blocks[2]) as c:
        _logits(llama)
    with steer(llama, {-1: torch.from_numpy(v)}, lam=1.0):
        with _Capture(blocks[2]) as s:
            _logits(llama)
    assert torch.equal(s.hidden, c.hidden + torch.from_numpy(v))


@pytest.mark.parametrize(
    ("vectors", "kwargs", "message"),
    [
        ({}, {}, "at least one"),
        ({3: np.zeros(D, np.float32)}, {}, "out of range"),
        ({1: np.zeros(D + 1, np.float32)}, {}, "hidden size"),
        ({1: np.zeros((2, D), np.float32)}, {}, "one vector"),
        ({1: np.full(D, np.nan, np.float32)}, {}, "NaN"),
        ({2: np.zeros(D, np.float32), -1: np.zeros(D, np.float32)}, {}, "twice"),
        ({1: np.zeros(D, np.float32)}, {"lam": float("inf")}, "lam"),
        ({1: np.zeros(D, np.float32)}, {"start_position": -1}, "start_position"),
    ],
)
def test_bad_arguments_raise_config_error(llama: torch.nn.Module, vectors: dict, kwargs: dict, message: str) -> None:
    before = _hook_ids(llama)
    with pytest.raises(ConfigError, match=message):
        with steer(llama, vectors, **kwargs):
            pass
    assert _hook_ids(llama) == before
