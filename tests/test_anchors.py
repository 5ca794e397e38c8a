"""Anchor texts for phase 4: bundled set, overlap with the evaluation prompts, bad files."""

from __future__ import annotations

import pytest

from driftlib.core.errors import DataError
from driftlib.datasets.anchors import MIN_ANCHORS, load_anchor_texts, prepare_anchors
from driftlib.datasets.prompts import load_prompts


def test_bundled_anchors_are_disjoint_from_the_bundled_prompts():
    texts, name = load_anchor_texts("bundled")
    assert len(texts) == 240 and name.endswith("anchors.txt")
    prompts = load_prompts("bundled")[0]["text"].tolist()
    table, report = prepare_anchors(texts, prompts)
    assert report == {"n_source": 240, "n_dropped_overlap": 0, "n": 240}
    assert table["id"].tolist()[:2] == ["anchor-0000", "anchor-0001"]


def test_anchors_that_are_evaluation_prompts_are_dropped_and_counted():
    texts = [f"Anchor sentence number {i}." for i in range(20)]
    prompts = ["  ANCHOR sentence   number 3. ", "anchor sentence number 7.", "something else"]
    table, report = prepare_anchors(texts, prompts)
    assert report["n_dropped_overlap"] == 2 and report["n"] == 18
    assert "Anchor sentence number 3." not in table["text"].tolist()


def test_n_keeps_a_seeded_subset_in_source_order():
    texts = [f"text {i}" for i in range(50)]
    a, _ = prepare_anchors(texts, [], n=20, seed=1)
    b, _ = prepare_anchors(texts, [], n=20, seed=1)
    c, _ = prepare_anchors(texts, [], n=20, seed=2)
    assert a.equals(b) and not a.equals(c) and len(a) == 20
    order = [int(t.split()[1]) for t in a["text"]]
    assert order == sorted(order)


def test_a_file_with_repeats_or_too_few_texts_is_refused(tmp_path):
    f = tmp_path / "anchors.txt"
    f.write_text("\n".join([f"line {i}" for i in range(12)] + ["Line 3"]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 13: repeats the anchor text of line 4"):
        load_anchor_texts(str(f))
    f.write_text("one\ntwo\n\n three \n", encoding="utf-8")
    with pytest.raises(DataError, match=f"at least {MIN_ANCHORS}"):
        load_anchor_texts(str(f))
    f.write_bytes(b"fine\n\xff\xfe broken\n")
    with pytest.raises(DataError, match="line 2: not valid UTF-8"):
        load_anchor_texts(str(f))
    with pytest.raises(DataError, match="after dropping 10"):
        prepare_anchors([f"t{i}" for i in range(12)], [f"t{i}" for i in range(10)])
