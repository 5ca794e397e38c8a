"""Model loading (local directories, hub ids offline), device and dtype settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from random_models import VOCAB, bpe_tokenizer

from driftlib.core.errors import ConfigError, ModelError
from driftlib.model.loading import (
    ATTN_IMPLEMENTATION,
    describe_model,
    load_model,
    resolve_device,
    resolve_dtype,
)


def _tokenizer() -> transformers.PreTrainedTokenizerFast:
    return bpe_tokenizer(["Human: hello there. Assistant: hi, how can I help?"] * 5, bos=False)


def _save(tmp_path: Path, config: transformers.PretrainedConfig, name: str = "model") -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    folder = tmp_path / name
    model.save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return folder, model


LLAMA = transformers.LlamaConfig(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    bos_token_id=0, eos_token_id=1,
)


# ---------------------------------------------------------------- device and dtype


def test_resolve_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device() == torch.device(expected)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="device: 'banana'"):
        resolve_device("banana")
    with pytest.raises(ConfigError, match="device"):
        resolve_device(3)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_resolve_device_cuda_without_gpu() -> None:
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_resolve_dtype() -> None:
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto") == torch.float32
    if not torch.cuda.is_available():  # on a GPU the answer depends on bfloat16 support
        assert resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("auto", "auto") == (torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32)
    assert resolve_dtype("float32", "cuda") == torch.float32
    assert resolve_dtype("bfloat16") == torch.bfloat16
    assert resolve_dtype("float16") == torch.float16
    assert resolve_dtype("bf16") == torch.bfloat16
    assert resolve_dtype(torch.float16) == torch.float16
    with pytest.raises(ConfigError, match="dtype: 'float64x'"):
        resolve_dtype("float64x")
    with pytest.raises(ConfigError, match="floating"):
        resolve_dtype(torch.int64)
    with pytest.raises(ConfigError, match="device: 'gpu0'"):
        resolve_dtype("auto", "gpu0")


def test_attn_defaults() -> None:
    assert ATTN_IMPLEMENTATION["gemma2"] == "eager"


# ---------------------------------------------------------------- local directories


def test_local_dir_without_weights(tmp_path: Path) -> None:
    folder = tmp_path / "noweights"
    LLAMA.save_pretrained(folder)
    with pytest.raises(ModelError) as info:
        load_model(folder)
    message = str(info.value)
    assert str(folder) in message and "no weights" in message and "*.safetensors" in message and "config.json" in message


def test_local_dir_without_config(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_model(folder)


def test_missing_local_path(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a directory"):
        load_model(str(tmp_path / "does" / "not" / "exist"))


def test_round_trip_gives_identical_logits(tmp_path: Path) -> None:
    folder, original = _save(tmp_path, LLAMA)
    model, tokenizer = load_model(str(folder), dtype="float32", device="cpu")
    assert not model.training
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    ids = torch.tensor([tokenizer("Human: hello there.")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, original(input_ids=ids).logits, rtol=0, atol=0)
    facts = describe_model(model)
    assert facts == {
        "model_type": "llama",
        "architecture": "LlamaForCausalLM",
        "n_layers": 2,
        "hidden_size": 32,
        "dtype": "float32",
        "device": "cpu",
        "n_params": sum(p.numel() for p in original.parameters()),
    }


def test_dtype_and_attention_choice(tmp_path: Path) -> None:
    folder, _ = _save(tmp_path, LLAMA)
    model, _ = load_model(folder, dtype="bfloat16", attn_implementation="eager")
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model.config._attn_implementation == "eager"
    default, _ = load_model(folder)
    assert default.config._attn_implementation != "eager"  # transformers' default (sdpa) when not chosen


def test_gemma2_gets_eager_attention(tmp_path: Path) -> None:
    config = transformers.Gemma2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )
    folder, _ = _save(tmp_path, config, "gemma2")
    model, _ = load_model(folder)
    assert model.config._attn_implementation == "eager"
    assert describe_model(model)["model_type"] == "gemma2"


def test_remote_code_model_refused_with_advice(tmp_path: Path) -> None:
    folder, _ = _save(tmp_path, LLAMA)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "driftlib-custom"
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig", "AutoModelForCausalLM": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="trust_remote_code: true"):
        load_model(folder)


# ---------------------------------------------------------------- hub ids


def test_unknown_hub_id_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as info:
        load_model("driftlib-tests/no-such-model", revision="main")
    message = str(info.value)
    assert "driftlib-tests/no-such-model" in message
    assert "HF_HUB_OFFLINE" in message
    assert "local copy" in message and "models.<key>.aligned" in message


def test_attention_default_comes_from_model_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = _save(tmp_path, LLAMA)
    monkeypatch.setitem(ATTN_IMPLEMENTATION, "llama", "eager")
    model, _ = load_model(folder)
    assert model.config._attn_implementation == "eager"


def test_hub_id_loads_from_local_cache_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder, original = _save(tmp_path, LLAMA)
    # lay the files out as the hub cache does: models--org--name/{refs/main, snapshots/<commit>/…}
    repo = Path(constants.HF_HUB_CACHE) / "models--driftlib-tests--cached-tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    model, tokenizer = load_model("driftlib-tests/cached-tiny")
    ids = torch.tensor([tokenizer("hello")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, original(input_ids=ids).logits, rtol=0, atol=0)


# ---------------------------------------------------------------- weights that do not match, damaged or pickled


def _drop_tensors(folder: Path, fragment: str) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    kept = {name: t for name, t in tensors.items() if fragment not in name}
    assert len(kept) < len(tensors)
    save_file(kept, folder / "model.safetensors", metadata={"format": "pt"})


def _set_config(folder: Path, **values) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(values)
    (folder / "config.json").write_text(json.dumps(config))


def test_weights_without_one_block_are_refused(tmp_path: Path) -> None:
    folder, _ = _save(tmp_path, LLAMA)
    _drop_tensors(folder, "model.layers.1.")
    with pytest.raises(ModelError) as info:
        load_model(folder)
    message = str(info.value)
    assert str(folder) in message and "missing from the weights" in message
    assert "model.layers.1.input_layernorm.weight" in message and "9 tensor(s)" in message
    assert "\n" not in message


def test_config_that_does_not_match_the_weights_is_refused(tmp_path: Path) -> None:
    more, _ = _save(tmp_path, LLAMA, "more")
    _set_config(more, num_hidden_layers=4)  # weights hold 2 blocks: blocks 2 and 3 would be random
    with pytest.raises(ModelError, match=r"18 tensor\(s\) missing from the weights .*model\.layers\.2\.") as info:
        load_model(more)
    assert str(more) in str(info.value) and "num_hidden_layers" in str(info.value)
    fewer, _ = _save(tmp_path, LLAMA, "fewer")
    _set_config(fewer, num_hidden_layers=1)  # block 1's weights would be dropped
    with pytest.raises(ModelError, match=r"9 tensor\(s\) in the weights but not in the model: model\.layers\.1\."):
        load_model(fewer)


def test_truncated_safetensors_is_a_one_line_error(tmp_path: Path) -> None:
    folder, _ = _save(tmp_path, LLAMA)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelError) as info:
        load_model(folder)
    message = str(info.value)
    assert str(folder) in message and "model.safetensors is not a readable safetensors file" in message
    assert "truncated" in message and "\n" not in message


def _refused_pickle(path: Path, model: torch.nn.Module) -> None:
    """A pickled state dict holding an object torch's weights-only loader refuses."""
    import argparse

    state = dict(model.state_dict())
    state["extra"] = argparse.Namespace(note="not a tensor")
    torch.save(state, path)


def test_pickle_weights_refused_with_advice_and_safetensors_preferred(tmp_path: Path) -> None:
    folder, model = _save(tmp_path, LLAMA)
    _refused_pickle(folder / "pytorch_model.bin", model)
    # beside safetensors weights the pickle is never read
    loaded, tokenizer = load_model(folder)
    ids = torch.tensor([tokenizer("hello")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=0)
    # alone, it is refused in one line that says what to do
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError) as info:
        load_model(folder)
    message = str(info.value)
    assert str(folder) in message and "pickle weights (pytorch_model.bin)" in message
    assert "not loaded" in message and "argparse.Namespace" in message and "model.safetensors" in message
    assert "\n" not in message


def test_auto_map_with_builtin_model_type_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder, _ = _save(tmp_path, LLAMA)
    _set_config(folder, auto_map={"AutoModelForCausalLM": "modeling_custom.CustomLlama"})
    with caplog.at_level("WARNING", logger="driftlib.model.loading"):
        model, _ = load_model(folder)
    assert type(model).__name__ == "LlamaForCausalLM"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("custom code" in w and "modeling_custom.CustomLlama" in w and "trust_remote_code" in w
               for w in warnings), warnings
    caplog.clear()
    plain, _ = _save(tmp_path, LLAMA, "plain")
    with caplog.at_level("WARNING", logger="driftlib.model.loading"):
        load_model(plain)
    assert not [r for r in caplog.records if "custom code" in r.getMessage()]
