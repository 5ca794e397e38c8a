"""Phase 1 behaviour: the answers a variant gives (through the aligned variant's template) and the
refusal rates computed from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from driftlib.cli import main
from driftlib.core.artifacts import read_table, write_table
from driftlib.model import tiny
from driftlib.model.render import render_prompts
from driftlib.phases.baseline.summary import behaviour_table
from driftlib.stats.behaviour import is_refusal
from driftlib.steer.capability import greedy_continuations


def test_answers_are_the_greedy_continuations_of_the_rendered_prompts(tok_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(0)
    model = tiny.new_model("llama", tokenizer).eval()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    prompts = tmp_path / "prompts.parquet"
    assert main(["-q", "prepare-prompts", "--per-group", "1", "--out", str(prompts)]) == 0
    out = tmp_path / "answers.parquet"
    assert main(["-q", "answer", "--model", str(tmp_path / "model"), "--dtype", "float32", "--device", "cpu",
                 "--name", "llama", "--variant", "base", "--template", str(tmp_path / "model"),
                 "--prompts", str(prompts), "--max-new-tokens", "6", "--out", str(out)]) == 0
    got = read_table(out)[0]
    table = read_table(prompts)[0]
    assert len(got) == len(table) == 14 and got["id"].tolist() == table["id"].tolist()
    # by hand: render through the template, generate greedily, decode, classify
    texts = render_prompts(tokenizer, table["text"].tolist(), template_tokenizer=tokenizer)
    assert all(t.endswith("<|assistant|>") for t in texts)
    ids = greedy_continuations(model, tokenizer, texts, None, 0.0, max_new_tokens=6)
    want = [tokenizer.decode(i, skip_special_tokens=True).strip() for i in ids]
    assert got["text"].tolist() == want
    assert got["refused"].tolist() == [is_refusal(t) for t in want]


def test_behaviour_table_counts_refusals_per_variant(tmp_path: Path) -> None:
    rows = []
    for variant, refused_unsafe, refused_safe in (("base", [True, False, False, False], [True, False]),
                                                   ("aligned", [True, True, True, False], [False, False])):
        for r in refused_unsafe:
            rows.append({"model": "m", "variant": variant, "axiom": "a", "safety_label": "unsafe", "refused": r})
        for r in refused_safe:
            rows.append({"model": "m", "variant": variant, "axiom": "a", "safety_label": "safe", "refused": r})
    for variant in ("base", "aligned"):
        write_table(pd.DataFrame([r for r in rows if r["variant"] == variant]), tmp_path / f"{variant}.parquet")
    got = behaviour_table([tmp_path / "base.parquet", tmp_path / "aligned.parquet"])
    overall = got[got["axiom"] == "overall"].set_index("variant")
    assert overall.loc["base", "refusal_unsafe"] == pytest.approx(1 / 4)
    assert overall.loc["aligned", "refusal_unsafe"] == pytest.approx(3 / 4)
    assert overall.loc["base", "over_refusal_safe"] == pytest.approx(1 / 2)
    assert overall.loc["aligned", "over_refusal_safe"] == 0.0
    assert np.all(overall["refusal_unsafe_ci_low"] <= overall["refusal_unsafe"])
