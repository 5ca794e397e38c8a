"""Checks on the bundled LITMUS-style sample and the neutral anchor sentences.

The sample (src/driftlib/data/litmus_sample.jsonl) stands in for the real
LITMUS data set when the hub copy is unavailable, so it must keep the same
schema, cover every axiom with both labels, and be hard enough that no single
word separates safe from unsafe prompts within an axiom.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parents[1] / "src" / "driftlib" / "data"
LITMUS_PATH = DATA_DIR / "litmus_sample.jsonl"
ANCHORS_PATH = DATA_DIR / "anchors.txt"

AXIOMS = {
    "Civility & Tolerance",
    "Duty & Accountability",
    "Empathy & Helpfulness",
    "Information Seeking",
    "Justice & Rights",
    "Well-being & Peace",
    "Wisdom & Knowledge",
}
LABELS = {"safe", "unsafe"}
MIN_PER_CELL = 20
MIN_ANCHORS = 200
MAX_SINGLE_WORD_ACCURACY = 0.75

_WORD = re.compile(r"[a-z]+")


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    out = []
    with LITMUS_PATH.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            assert line.strip(), f"blank line {lineno} in {LITMUS_PATH.name}"
            out.append(json.loads(line))
    return out


@pytest.fixture(scope="module")
def anchors() -> list[str]:
    lines = ANCHORS_PATH.read_text(encoding="utf-8").splitlines()
    assert all(line.strip() for line in lines), "blank line in anchors.txt"
    return lines


def test_schema_is_exact(rows):
    assert rows, "litmus_sample.jsonl is empty"
    for i, row in enumerate(rows):
        assert isinstance(row, dict), i
        assert set(row) == {"axiom", "safety_label", "input"}, (i, sorted(row))
        assert row["axiom"] in AXIOMS, (i, row["axiom"])
        assert row["safety_label"] in LABELS, (i, row["safety_label"])
        assert isinstance(row["input"], str), i
        assert row["input"].strip(), f"empty input on row {i}"
        assert row["input"] == row["input"].strip(), f"untrimmed input on row {i}"


def test_every_axiom_and_label_is_covered(rows):
    counts = Counter((r["axiom"], r["safety_label"]) for r in rows)
    for axiom in AXIOMS:
        for label in LABELS:
            assert counts[(axiom, label)] >= MIN_PER_CELL, (axiom, label, counts[(axiom, label)])
    # balanced within each axiom, so accuracy figures are comparable
    for axiom in AXIOMS:
        assert counts[(axiom, "safe")] == counts[(axiom, "unsafe")], axiom


def test_no_duplicate_prompts(rows):
    seen = Counter(_norm(r["input"]) for r in rows)
    dups = [t for t, n in seen.items() if n > 1]
    assert not dups, dups


def _single_word_rule_accuracies(axiom_rows: list[dict]) -> dict[str, float]:
    """Best accuracy of "contains w -> label X, else the other label" per word.

    Taking the best over X covers both the rule and its complement.
    """
    token_sets = [set(_WORD.findall(r["input"].lower())) for r in axiom_rows]
    labels = [r["safety_label"] for r in axiom_rows]
    n = len(axiom_rows)
    vocab = set().union(*token_sets)
    result = {}
    for w in vocab:
        correct_if_unsafe = sum(
            (w in toks) == (lab == "unsafe") for toks, lab in zip(token_sets, labels)
        )
        acc_unsafe = correct_if_unsafe / n  # rule: w present -> unsafe
        acc_safe = (n - correct_if_unsafe) / n  # rule: w present -> safe
        result[w] = max(acc_unsafe, acc_safe)
    return result


def test_no_single_word_separates_labels(rows):
    by_axiom: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_axiom[r["axiom"]].append(r)
    failures = []
    for axiom, axiom_rows in sorted(by_axiom.items()):
        accs = _single_word_rule_accuracies(axiom_rows)
        for w, acc in accs.items():
            if acc > MAX_SINGLE_WORD_ACCURACY:
                failures.append((axiom, w, round(acc, 3)))
    assert not failures, failures


def test_single_word_rule_helper_detects_a_leak():
    # Sanity check on the helper itself: a word present in every unsafe
    # prompt and no safe one must give accuracy 1.0.
    fake = [{"safety_label": "unsafe", "input": f"leak prompt {i}"} for i in range(4)]
    fake += [{"safety_label": "safe", "input": f"plain prompt {i}"} for i in range(4)]
    accs = _single_word_rule_accuracies(fake)
    assert accs["leak"] == 1.0
    assert accs["plain"] == 1.0
    assert accs["prompt"] == 0.5


def test_anchor_count_and_content(anchors):
    assert len(anchors) >= MIN_ANCHORS, len(anchors)
    norm = [_norm(a) for a in anchors]
    assert len(set(norm)) == len(norm), "duplicate anchor sentences"
    for a in anchors:
        assert a == a.strip()


def test_anchors_disjoint_from_prompts(rows, anchors):
    prompts = {_norm(r["input"]) for r in rows}
    overlap = [a for a in anchors if _norm(a) in prompts]
    assert not overlap, overlap


def _jaccard(a: str, b: str) -> float:
    ta, tb = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
    return len(ta & tb) / len(ta | tb) if ta | tb else 1.0


def test_anchors_are_not_near_copies_of_prompts(rows, anchors):
    prompts = [r["input"] for r in rows]
    close = [
        (a, p, round(_jaccard(a, p), 2))
        for a in anchors
        for p in prompts
        if _jaccard(a, p) >= 0.5
    ]
    assert not close, close[:5]


# Words that would make an anchor sentence a safety-loaded text rather than a
# neutral one; the anchors are meant to carry no safety signal at all.
_LOADED = {
    "harm", "hurt", "kill", "weapon", "weapons", "bomb", "steal", "stealing",
    "hack", "hacking", "illegal", "attack", "abuse", "suicide", "insult",
    "insults", "harass", "harassing", "cheat", "fake", "scam", "blackmail",
    "spyware", "revenge", "racist", "slur", "slurs",
}


def test_anchors_carry_no_safety_loaded_words(anchors):
    hits = [a for a in anchors if _LOADED & set(_WORD.findall(a.lower()))]
    assert not hits, hits
