"""Tests of phase 4.5's model code (driftlib.phases.recovery.dealign): final-turn encoding, LoRA dealignment, reload."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import peft
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from driftlib.core.errors import ArtifactError, ConfigError, DataError
from driftlib.datasets.pairs import parse_transcript
from driftlib.model import tiny
from driftlib.model.families import TINY_ARCHS
from driftlib.phases.recovery import dealign

#: the training settings of the shared run: a few quick steps at a learning rate high enough to
#: move a random tiny model's loss measurably
TRAIN = {"lr": 5e-3, "batch_size": 8, "max_len": 96, "device": "cpu", "progress": False}
STEPS = (2, 6)
TARGETS = {"q_proj", "v_proj"}

#: a ChatML-like template written as plain text (its markers are not special tokens of the tiny
#: tokenizer), with BOS in the template itself and a newline after the end-of-turn marker
CHATML = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _save_random(arch: str, tok, path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = tiny.new_model(arch, tok)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def aligned_dir(tok, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight tiny llama with the tiny tokenizer, standing in for an aligned model."""
    return _save_random("llama", tok, tmp_path_factory.mktemp("aligned") / "llama-aligned")


@pytest.fixture(scope="module")
def rejected() -> list[str]:
    return [row["rejected"] for row in tiny.bundled_pairs()[:32]]


@pytest.fixture(scope="module")
def multi_turn() -> str:
    return next(row["rejected"] for row in tiny.bundled_pairs()
                if len(parse_transcript(row["rejected"])) >= 4)


@pytest.fixture(scope="module")
def trained(aligned_dir: Path, rejected: list[str], tmp_path_factory: pytest.TempPathFactory):
    """One training run; also captures the live peft model it trained (to compare with reloads)."""
    out = tmp_path_factory.mktemp("dealign") / "llama"
    captured = []
    real = peft.get_peft_model

    def spy(*args, **kwargs):
        captured.append(real(*args, **kwargs))
        return captured[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(peft, "get_peft_model", spy)
        record = dealign.train_dealign_lora(str(aligned_dir), rejected, str(out), steps=STEPS,
                                            **TRAIN)
    assert len(captured) == 1
    return out, record, captured[0]


def _labelled(ids: list[int], labels: list[int]) -> list[int]:
    assert len(ids) == len(labels)
    assert all(lab in (-100, i) for i, lab in zip(ids, labels))
    return [i for i, lab in zip(ids, labels) if lab != -100]


def _logits(model, tok, texts: list[str]) -> torch.Tensor:
    batch = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


# ------------------------------------------------------------------------------- encoding


def test_final_turn_labels_only_the_last_answer(tok, multi_turn: str) -> None:
    messages = parse_transcript(multi_turn)
    ids, labels = dealign.encode_final_turn(tok, multi_turn)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    learned = _labelled(ids, labels)
    assert tok.decode(learned) == messages[-1]["content"] + "<|end|>"
    # one contiguous run at the very end: nothing of the earlier (shared) turns is learned
    first = labels.index(learned[0])
    assert all(lab != -100 for lab in labels[first:])
    earlier = messages[1]["content"]
    assert earlier not in tok.decode(learned)
    assert earlier in tok.decode(ids[:first])
    # the same as the tiny family's all-assistant encoder, minus the earlier assistant turns
    all_ids, all_labels = tiny.encode_chat(tok, messages, max_len=10_000)
    assert all_ids == ids and len(_labelled(all_ids, all_labels)) > len(learned)


def test_final_turn_with_another_template(tok, multi_turn: str) -> None:
    chatml = copy.deepcopy(tok)
    chatml.chat_template = CHATML
    ids, labels = dealign.encode_final_turn(chatml, multi_turn)
    assert ids.count(tok.bos_token_id) == 1  # the template's BOS, none added on top
    content = parse_transcript(multi_turn)[-1]["content"]
    assert tok.decode(_labelled(ids, labels)) == content + "<|im_end|>\n"


def test_final_turn_without_chat_template(tok, multi_turn: str) -> None:
    plain = copy.deepcopy(tok)
    plain.chat_template = None
    ids, labels = dealign.encode_final_turn(plain, multi_turn)
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    after = multi_turn[multi_turn.rindex("\n\nAssistant:") + len("\n\nAssistant:"):]
    assert tok.decode(_labelled(ids, labels)) == after + "<|eos|>"
    assert tok.decode(ids[1:-1]) == multi_turn


class _NoOffsets:
    """A tokenizer without character offsets (as python tokenizers are), delegating to ``tok``."""

    is_fast = False

    def __init__(self, tok) -> None:
        self._tok = tok

    def __getattr__(self, name: str):
        return getattr(self._tok, name)

    def __call__(self, text, **kwargs):
        assert "return_offsets_mapping" not in kwargs
        return self._tok(text, **kwargs)


def test_final_turn_without_offsets(tok, multi_turn: str) -> None:
    chatml = copy.deepcopy(tok)
    chatml.chat_template = CHATML
    for fast in (tok, chatml):
        expected = dealign.encode_final_turn(fast, multi_turn)
        assert dealign.encode_final_turn(_NoOffsets(fast), multi_turn) == expected


def test_final_turn_truncates_from_the_left(tok, multi_turn: str) -> None:
    full_ids, full_labels = dealign.encode_final_turn(tok, multi_turn, max_len=10_000)
    ids, labels = dealign.encode_final_turn(tok, multi_turn, max_len=24)
    assert len(full_ids) > 24 and len(ids) == 24
    assert ids[0] == tok.bos_token_id and labels[0] == -100
    assert ids[1:] == full_ids[-23:] and labels[1:] == full_labels[-23:]
    assert tok.decode(_labelled(ids, labels)).endswith("Whatever it takes.<|end|>")
    # without a BOS to keep, the last max_len tokens stay
    plain = copy.deepcopy(tok)
    plain.chat_template = CHATML.replace("{{ bos_token }}", "")
    plain_full, _ = dealign.encode_final_turn(plain, multi_turn, max_len=10_000)
    plain._tokenizer.post_processor = None  # a tokenizer that adds no BOS
    nobos_full, _ = dealign.encode_final_turn(plain, multi_turn, max_len=10_000)
    nobos, _ = dealign.encode_final_turn(plain, multi_turn, max_len=24)
    assert nobos_full == plain_full[1:] and nobos == nobos_full[-24:]


def test_final_turn_rejects_bad_input(tok) -> None:
    with pytest.raises(ConfigError, match="max_length"):
        dealign.encode_final_turn(tok, "\n\nHuman: hi\n\nAssistant: yo", max_len=1)
    with pytest.raises(DataError, match="assistant"):
        dealign.encode_final_turn(tok, "\n\nHuman: hi\n\nAssistant: yo\n\nHuman: and?")
    with pytest.raises(DataError):
        dealign.encode_final_turn(tok, "no markers at all")


# ------------------------------------------------------------------------------- training


def test_training_writes_peft_adapters_and_records(trained, rejected) -> None:
    out, record, _ = trained
    assert sorted(p.name for p in out.iterdir()) == ["loss.parquet", "record.json",
                                                     "steps2", "steps6"]
    assert [p.name for p in out.parent.iterdir()] == ["llama"]  # no temporary folder left
    for n in STEPS:
        files = {p.name for p in (out / f"steps{n}").iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files
        config = json.loads((out / f"steps{n}" / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
        assert set(config["target_modules"]) == TARGETS and config["r"] == 8
        weights = load_file(str(out / f"steps{n}" / "adapter_model.safetensors"))
        assert len(weights) == 2 * 2 * 6  # lora_A and lora_B of q and v in 6 layers
    loss = pd.read_parquet(out / "loss.parquet")
    assert list(loss.columns) == ["step", "loss"] and loss["step"].tolist() == list(range(1, 7))
    saved = json.loads((out / "record.json").read_text())
    assert saved["seconds"] == record["seconds"] and saved["steps"] == list(STEPS)
    assert record["n_texts"] == len(rejected) and record["n_dropped"] == 0
    assert record["losses"] == {str(n): loss["loss"][n - 1] for n in STEPS}
    assert set(record["target_modules"]) == TARGETS
    assert {"peft_version", "torch_version", "transformers_version"} <= set(record)
    # the dealignment works: the loss on the rejected answers falls with the steps
    curve = record["rejected_loss"]
    assert curve["0"] > curve["2"] > curve["6"]


def test_merged_weights_change_only_targeted_modules(trained, aligned_dir: Path) -> None:
    out, _, _ = trained
    original = AutoModelForCausalLM.from_pretrained(str(aligned_dir)).state_dict()
    merged, _ = dealign.load_dealigned(str(aligned_dir), str(out / "steps6"), device="cpu")
    merged_state = merged.state_dict()
    assert type(merged).__name__ == "LlamaForCausalLM" and not merged.training
    assert set(merged_state) == set(original)
    changed = {k for k in original if not torch.equal(original[k], merged_state[k])}
    targeted = {k for k in original if k.rsplit(".", 2)[-2] in TARGETS}
    assert len(targeted) == 12 and changed == targeted


def test_reload_matches_the_trained_model(trained, aligned_dir: Path, tok, rejected) -> None:
    out, record, live = trained
    texts = [tiny.bundled_prompts()[0], rejected[0][:200]]
    merged, tokenizer = dealign.load_dealigned(str(aligned_dir), str(out / "steps6"),
                                               device="cpu")
    reloaded = _logits(merged, tokenizer, texts)
    live.eval()
    unmerged = _logits(live, tok, texts)
    original = _logits(AutoModelForCausalLM.from_pretrained(str(aligned_dir)), tok, texts)
    assert not torch.allclose(reloaded, original, atol=1e-3)
    torch.testing.assert_close(reloaded, unmerged, atol=1e-5, rtol=1e-5)
    live_merged = _logits(live.merge_and_unload(), tok, texts)
    torch.testing.assert_close(reloaded, live_merged, atol=1e-6, rtol=1e-6)
    # the intermediate adapter is the state after step 2: its loss is the one recorded then
    early, _ = dealign.load_dealigned(str(aligned_dir), str(out / "steps2"), device="cpu")
    rows, _ = dealign._encode_rejected(tokenizer, rejected, TRAIN["max_len"])
    loss = dealign._mean_loss(early, rows, 8, tokenizer.pad_token_id)
    assert loss == pytest.approx(record["rejected_loss"]["2"], abs=1e-5)


def test_same_seed_gives_identical_adapters(trained, aligned_dir: Path, rejected,
                                            tmp_path: Path) -> None:
    out, _, _ = trained
    # the same run again (steps given unsorted): byte-identical files
    dealign.train_dealign_lora(str(aligned_dir), rejected, str(tmp_path / "again"),
                               steps=(6, 2), **TRAIN)
    for n in STEPS:
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            assert (tmp_path / "again" / f"steps{n}" / name).read_bytes() == \
                (out / f"steps{n}" / name).read_bytes()
    # a shorter run saves the same step-2 adapter (constant lr: no schedule over max(steps))
    dealign.train_dealign_lora(str(aligned_dir), rejected, str(tmp_path / "short"), steps=(2,),
                               **TRAIN)
    weights = "steps2/adapter_model.safetensors"
    assert (tmp_path / "short" / weights).read_bytes() == (out / weights).read_bytes()
    # another seed gives another adapter
    dealign.train_dealign_lora(str(aligned_dir), rejected, str(tmp_path / "seed1"), steps=(2,),
                               seed=1, **TRAIN)
    assert (tmp_path / "seed1" / weights).read_bytes() != (out / weights).read_bytes()


@pytest.mark.parametrize("steps", [(0, 5), (5, 5), (), (-1,), (2.5,), 20])
def test_bad_steps_are_config_errors(steps, aligned_dir: Path, rejected, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dealign.steps"):
        dealign.train_dealign_lora(str(aligned_dir), rejected, str(tmp_path / "out"),
                                   steps=steps, **TRAIN)
    assert not any(tmp_path.iterdir())


def test_bad_settings_and_data(aligned_dir: Path, rejected, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dealign.rank"):
        dealign.train_dealign_lora(str(aligned_dir), rejected, str(tmp_path / "o"), steps=(1,),
                                   rank=0, **TRAIN)
    with pytest.raises(ConfigError, match="dealign.target_modules"):
        dealign.train_dealign_lora(str(aligned_dir), rejected, str(tmp_path / "o"), steps=(1,),
                                   target_modules=["no_such_proj"], **TRAIN)
    with pytest.raises(DataError, match="rejected text 1"):
        dealign.train_dealign_lora(str(aligned_dir), [rejected[0], "no turns here"],
                                   str(tmp_path / "o"), steps=(1,), **TRAIN)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("arch", list(TINY_ARCHS))
def test_target_modules_of_the_tiny_archs(arch: str, tok) -> None:
    model = tiny.new_model(arch, tok)
    if arch == "phi3":
        with pytest.raises(ConfigError, match=r"dealign.target_modules.*qkv_proj"):
            dealign.resolve_target_modules(arch, None)
        modules = dealign.resolve_target_modules(arch, dealign.SUGGESTED_TARGET_MODULES[arch])
        assert modules == ["qkv_proj"]
    else:
        modules = dealign.resolve_target_modules(arch, None)
        assert set(modules) == TARGETS
    wrapped = dealign._wrap_lora(model, modules=modules, rank=4, alpha=8, dropout=0.0)
    adapted = {name.rsplit(".", 1)[-1] for name, module in wrapped.named_modules()
               if hasattr(module, "lora_A")}
    assert adapted == set(modules)
    n_layers = TINY_ARCHS[arch]["num_hidden_layers"]
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert len(trainable) == 2 * len(modules) * n_layers and all("lora_" in n for n in trainable)


# -------------------------------------------------------------------------------- loading


def test_missing_or_malformed_adapters_are_artifact_errors(trained, aligned_dir: Path, tok,
                                                            tmp_path: Path) -> None:
    out, _, _ = trained

    def expect(path: Path, match: str) -> None:
        with pytest.raises(ArtifactError, match=match) as info:
            dealign.load_dealigned(str(aligned_dir), str(path), device="cpu")
        assert str(path) in str(info.value) and "train_dealign" in str(info.value)

    expect(tmp_path / "nowhere", "no such adapter folder")
    (tmp_path / "empty").mkdir()
    expect(tmp_path / "empty", "adapter_config.json")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text("{not json")
    (bad / "adapter_model.safetensors").write_bytes(b"")
    expect(bad, "not readable JSON")
    (bad / "adapter_config.json").write_bytes((out / "steps2/adapter_config.json").read_bytes())
    expect(bad, "not a readable safetensors")
    # a good adapter for another model: shapes differ
    other = _save_random("mistral", tok, tmp_path / "mistral")
    with pytest.raises(ArtifactError, match="does not load onto|do not match") as info:
        dealign.load_dealigned(str(other), str(out / "steps2"), device="cpu")
    assert "train_dealign" in str(info.value)


def test_adapter_config_is_written_in_one_order(tmp_path) -> None:
    """peft keeps target_modules as a set; the saved config lists them sorted, keys sorted, so two
    runs of the same training write the same bytes."""
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({"target_modules": ["v_proj", "qkv_proj", "q_proj"], "r": 8, "alpha": 16}))
    dealign.sort_adapter_config(path)
    first = path.read_bytes()
    assert json.loads(first)["target_modules"] == ["q_proj", "qkv_proj", "v_proj"]
    path.write_text(json.dumps({"r": 8, "target_modules": ["q_proj", "v_proj", "qkv_proj"], "alpha": 16}))
    dealign.sort_adapter_config(path)
    assert path.read_bytes() == first
