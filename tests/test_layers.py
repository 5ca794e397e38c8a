"""Decoder-block lookup and layer settings."""

from __future__ import annotations

import pytest
import torch
import transformers

from driftlib.core.errors import ConfigError, ModelError
from driftlib.core.layerspec import resolve_layers
from driftlib.model.families import LAYER_PATHS
from driftlib.model.layers import find_decoder_layers, num_layers


def _llama(n_layers: int = 3) -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=2,
    )


@pytest.mark.parametrize(
    ("config", "path"),
    [
        (_llama(), "model.layers"),
        (transformers.GPT2Config(vocab_size=300, n_embd=32, n_layer=3, n_head=4, n_positions=64), "transformer.h"),
        (transformers.GPTNeoXConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4), "gpt_neox.layers"),
    ],
)
def test_find_decoder_layers_of_causal_lms(config: transformers.PretrainedConfig, path: str) -> None:
    model = transformers.AutoModelForCausalLM.from_config(config)
    expected = model
    for name in path.split("."):
        expected = getattr(expected, name)
    assert find_decoder_layers(model) is expected
    assert num_layers(model) == 3


def test_find_decoder_layers_of_a_bare_base_model() -> None:
    base = transformers.AutoModel.from_config(_llama(2))
    assert find_decoder_layers(base) is base.layers
    assert num_layers(base) == 2


def test_unknown_model_lists_every_path_tried() -> None:
    class Odd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])

    with pytest.raises(ModelError) as info:
        find_decoder_layers(Odd())
    message = str(info.value)
    assert "Odd" in message
    for path in LAYER_PATHS:
        assert repr(path) in message


def test_resolve_ints_and_negatives() -> None:
    assert resolve_layers(3, 10) == [3]
    assert resolve_layers(-1, 10) == [9]
    assert resolve_layers([-1, 0, 9, 4, 4], 10) == [0, 4, 9]
    assert resolve_layers((-10,), 10) == [0]


def test_resolve_relative_depths() -> None:
    assert resolve_layers(1.0, 30) == [29]
    assert resolve_layers(0.5, 30) == [14]
    assert resolve_layers(0.01, 30) == [0]  # round(0.3) - 1 = -1 -> clamped to 0
    assert resolve_layers([0.25, 0.75], 12) == [2, 8]
    assert resolve_layers([0.5, 14], 30) == [14]  # a depth and an index naming the same block


def test_resolve_numpy_values() -> None:
    import numpy as np

    assert resolve_layers(np.array([1, -1]), 4) == [1, 3]
    assert resolve_layers(np.int64(2), 4) == [2]


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (10, "layer 10 is out of range"),
        (-11, "layer -11 is out of range"),
        (0.0, "relative depth"),
        (1.5, "relative depth"),
        (float("nan"), "relative depth"),
        (True, "not a layer"),
        ("last", "not a layer"),
        ([], "no layers"),
        ([1, None], "not a layer"),
    ],
)
def test_resolve_errors_name_key_value_and_depth(spec: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_layers(spec, 10, key="aqi.layers")  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith("aqi.layers:")
    assert fragment in message
    assert "10 decoder blocks" in message
