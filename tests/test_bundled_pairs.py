"""Checks on the bundled preference pairs, tiny-model corpus and neutral text.

preference_pairs.jsonl stands in for Anthropic/hh-rlhf, so each row must be an
hh-rlhf-style pair whose two transcripts share the whole conversation and
differ only in the final assistant turn. corpus.txt trains the tiny models and
neutral.txt is held-out text for measuring distribution shift, so the two must
not overlap.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parents[1] / "src" / "driftlib" / "data"
PAIRS_PATH = DATA_DIR / "preference_pairs.jsonl"
CORPUS_PATH = DATA_DIR / "corpus.txt"
NEUTRAL_PATH = DATA_DIR / "neutral.txt"

HUMAN_START = "\n\nHuman: "
ASSISTANT_MARKER = "\n\nAssistant:"
MIN_PAIRS = 100
MIN_CORPUS_BYTES = 40 * 1024
MIN_CORPUS_PARAGRAPHS = 100
MIN_NEUTRAL_LINES = 60


def _norm(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    rows = []
    for i, line in enumerate(PAIRS_PATH.read_text(encoding="utf-8").splitlines(), 1):
        assert line.strip(), f"blank line {i} in {PAIRS_PATH.name}"
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:  # pragma: no cover - failure path
            pytest.fail(f"line {i} is not valid JSON: {exc}")
    return rows


@pytest.fixture(scope="module")
def corpus_text() -> str:
    return CORPUS_PATH.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def neutral_lines() -> list[str]:
    return [ln.strip() for ln in NEUTRAL_PATH.read_text(encoding="utf-8").splitlines() if ln.strip()]


def test_pairs_count(pairs):
    assert len(pairs) >= MIN_PAIRS


def test_pairs_schema(pairs):
    for i, row in enumerate(pairs, 1):
        assert isinstance(row, dict), f"line {i}: not an object"
        assert isinstance(row.get("chosen"), str), f"line {i}: chosen must be a string"
        assert isinstance(row.get("rejected"), str), f"line {i}: rejected must be a string"


def test_pairs_start_with_human(pairs):
    for i, row in enumerate(pairs, 1):
        for key in ("chosen", "rejected"):
            assert row[key].startswith(HUMAN_START), f"line {i}: {key} must start with {HUMAN_START!r}"


def test_pairs_differ_only_in_final_assistant_turn(pairs):
    for i, row in enumerate(pairs, 1):
        chosen, rejected = row["chosen"], row["rejected"]
        c_cut = chosen.rfind(ASSISTANT_MARKER)
        r_cut = rejected.rfind(ASSISTANT_MARKER)
        assert c_cut > 0 and r_cut > 0, f"line {i}: missing {ASSISTANT_MARKER!r}"
        c_head, c_tail = chosen[:c_cut], chosen[c_cut + len(ASSISTANT_MARKER):]
        r_head, r_tail = rejected[:r_cut], rejected[r_cut + len(ASSISTANT_MARKER):]
        assert c_head == r_head, f"line {i}: conversations differ before the final assistant turn"
        assert c_tail.strip() and r_tail.strip(), f"line {i}: empty final assistant turn"
        assert c_tail.strip() != r_tail.strip(), f"line {i}: final assistant turns are identical"
        assert "\n\nHuman:" not in c_tail and "\n\nHuman:" not in r_tail, (
            f"line {i}: transcript must end with an assistant turn"
        )


def test_pairs_no_duplicates(pairs):
    keys = [(row["chosen"], row["rejected"]) for row in pairs]
    assert len(set(keys)) == len(keys)
    chosen = [row["chosen"] for row in pairs]
    assert len(set(chosen)) == len(chosen)


def test_corpus_size_and_paragraphs(corpus_text):
    assert len(corpus_text.encode("utf-8")) >= MIN_CORPUS_BYTES
    paragraphs = [p for p in corpus_text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    assert len(paragraphs) >= MIN_CORPUS_PARAGRAPHS


def test_corpus_contains_dialogue(corpus_text):
    assert "User: " in corpus_text and "\nAssistant: " in corpus_text


def test_neutral_count_and_unique(neutral_lines):
    assert len(neutral_lines) >= MIN_NEUTRAL_LINES
    assert len(set(neutral_lines)) == len(neutral_lines)


def test_neutral_disjoint_from_corpus(neutral_lines, corpus_text):
    corpus_norm = _norm(corpus_text)
    leaked = [ln for ln in neutral_lines if _norm(ln) in corpus_norm]
    assert not leaked, f"neutral lines found in corpus.txt: {leaked[:3]}"
