"""Tests of driftlib.model.render with the tiny family's tokenizer (it has a chat template) and
copies of it without one or with another."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

from driftlib.core.errors import ConfigError, DataError, ModelError
from driftlib.model import render as R

SRC = Path(__file__).resolve().parents[1] / "src"
#: a ChatML-style template, standing in for a base model that ships with a different template
CHATML = ("{%- for m in messages -%}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}")


@pytest.fixture(scope="module")
def variants(tok):
    """(aligned, base without a template, base with another template)."""
    bare = copy.deepcopy(tok)
    bare.chat_template = None
    other = copy.deepcopy(tok)
    other.chat_template = CHATML
    return tok, bare, other


def test_rendering_is_the_templates_single_user_turn(tok):
    text = "How do I bake bread?"
    got = R.render_prompt(tok, text)
    # the tiny template by hand: <|role|>content<|end|>, then <|assistant|> as the generation prompt
    assert got == "<|user|>How do I bake bread?<|end|><|assistant|>"
    assert got == tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                          add_generation_prompt=True)


def test_the_rendering_ends_with_the_generation_prompt(tok, variants):
    msgs = [{"role": "user", "content": "hello"}]
    with_gp = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    without = tok.apply_chat_template(msgs, tokenize=False)
    generation_prompt = with_gp[len(without):]
    assert generation_prompt == "<|assistant|>"
    for text in ("hello", "a longer prompt, with punctuation!"):
        assert R.render_prompt(tok, text).endswith(generation_prompt)
    _, bare, other = variants
    assert R.render_prompt(bare, "hello").endswith("\nAssistant:")
    assert R.render_prompt(other, "hello").endswith("<|im_start|>assistant\n")


def test_base_and_aligned_read_the_same_bytes_through_the_aligned_template(variants):
    aligned, bare, other = variants
    texts = ["How do I kill a Python process?", "Tell me about your weekend.", "ünïcödé {text} and braces"]
    want = R.render_prompts(aligned, texts)
    for base in (bare, other):
        got = R.render_prompts(base, texts, template_tokenizer=aligned)
        assert [g.encode("utf-8") for g in got] == [w.encode("utf-8") for w in want]
        # without the shared template they would not (the test could fail)
        assert R.render_prompts(base, texts) != want
    # the template tokenizer decides, even where the reading model has a template of its own
    assert R.render_prompt(aligned, "x", template_tokenizer=other) == "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"


def test_the_plain_template_without_any_chat_template(variants):
    _, bare, _ = variants
    assert not R.has_chat_template(bare) and R.has_chat_template(variants[0])
    assert R.render_prompt(bare, "hello") == "User: hello\nAssistant:"
    assert R.render_prompt(bare, "use {text} and {0}") == "User: use {text} and {0}\nAssistant:"
    # a template tokenizer without a template falls back too, whatever the reading model has
    assert R.render_prompt(variants[0], "hello", template_tokenizer=bare) == R.PLAIN_TEMPLATE.format(text="hello")

    class NoChat:  # a tokenizer-like object without any chat support
        pass

    assert R.render_prompt(NoChat(), "hi") == "User: hi\nAssistant:"


def test_errors(variants):
    aligned, _, _ = variants
    with pytest.raises(DataError):
        R.render_prompt(aligned, None)  # type: ignore[arg-type]
    with pytest.raises(DataError):
        R.render_prompts(aligned, "one string")  # type: ignore[arg-type]
    broken = copy.deepcopy(aligned)
    broken.chat_template = "{{ raise_exception('no user turns here') }}"
    with pytest.raises(ModelError, match="no user turns here"):
        R.render_prompt(aligned, "x", template_tokenizer=broken)


def test_import_loads_no_torch():
    code = "import sys, driftlib.model.render\nprint(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(SRC)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_format_prompts_raw_is_the_text_and_chat_is_the_rendering(variants):
    aligned, bare, _ = variants
    texts = ["How do I bake bread?", "Tell me a secret."]
    assert R.format_prompts(aligned, texts, "raw") == texts
    assert R.format_prompts(bare, texts, "chat", template_tokenizer=aligned) == R.render_prompts(aligned, texts)
    with pytest.raises(ConfigError, match="render"):
        R.format_prompts(aligned, texts, "markdown")
    with pytest.raises(DataError):
        R.format_prompts(aligned, "one string", "chat")


def test_a_template_that_writes_the_bos_gives_one_bos_not_two(variants):
    aligned, _, _ = variants
    # the tiny tokenizer adds <|bos|> itself; a template that also writes it (as Llama-3's does)
    writes_bos = copy.deepcopy(aligned)
    writes_bos.chat_template = "{{ bos_token }}" + aligned.chat_template
    assert R.adds_bos(aligned) == aligned.bos_token
    rendered = R.render_prompt(aligned, "hi", template_tokenizer=writes_bos)
    assert rendered.startswith(aligned.bos_token)
    (text,) = R.format_prompts(aligned, ["hi"], "chat", template_tokenizer=writes_bos)
    ids = aligned(text)["input_ids"]
    assert ids.count(aligned.bos_token_id) == 1 and ids[0] == aligned.bos_token_id
    # the same ids as the template without the BOS, tokenised with the tokenizer's own
    assert ids == aligned(R.render_prompt(aligned, "hi"))["input_ids"]


def test_extract_with_chat_render_reads_the_last_token_of_the_aligned_template(tok_dir, tmp_path):
    """`driftlib extract --render chat --pooling last` on a base variant whose tokenizer has no
    template, given the aligned variant's folder as --template, equals the block output at the last
    token of the prompt rendered by hand through the aligned template."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from driftlib.cli import main
    from driftlib.core.artifacts import load_tensors, read_table
    from driftlib.model import tiny

    aligned_tok = AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(0)
    model = tiny.new_model("llama", aligned_tok).eval()
    aligned_tok.save_pretrained(tmp_path / "aligned")
    model.save_pretrained(tmp_path / "base")
    base_tok = copy.deepcopy(aligned_tok)
    base_tok.chat_template = None
    base_tok.save_pretrained(tmp_path / "base")
    prompts = tmp_path / "prompts.parquet"
    assert main(["-q", "prepare-prompts", "--per-group", "1", "--out", str(prompts)]) == 0
    out = tmp_path / "h.safetensors"
    assert main(["-q", "extract", "--model", str(tmp_path / "base"), "--dtype", "float32", "--device", "cpu",
                 "--template", str(tmp_path / "aligned"), "--name", "llama", "--variant", "base",
                 "--texts", str(prompts), "--layers", "1", "--render", "chat", "--pooling", "last",
                 "--out", str(out)]) == 0
    tensors, meta = load_tensors(out)
    assert meta["render"] == "chat" and meta["template"] == str(tmp_path / "aligned")
    texts = read_table(prompts)[0]["text"].tolist()
    want = []
    with torch.no_grad():
        for text in texts:
            rendered = aligned_tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                       add_generation_prompt=True)
            ids = torch.tensor([aligned_tok(rendered)["input_ids"]])
            hs = model(ids, output_hidden_states=True).hidden_states
            want.append(hs[2][0, -1].numpy())   # hidden_states[i + 1] is block i's output
    np.testing.assert_allclose(tensors["hidden"][:, 0, :], np.stack(want), rtol=1e-4, atol=1e-5)
