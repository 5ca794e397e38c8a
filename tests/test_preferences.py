"""Tests of driftlib.datasets.pairs: hh-rlhf pair loading, sampling and transcript parsing."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from driftlib.core.artifacts import fingerprint
from driftlib.core.errors import ConfigError, DataError
from driftlib.datasets.pairs import (
    load_pairs,
    parse_transcript,
    sample_pairs,
    shared_prefix_chars,
)

CONV = "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour and water.\n\nHuman: And then?"


def _pair(i: int) -> dict[str, str]:
    return {"chosen": f"{CONV}\n\nAssistant: Knead it ({i}).",
            "rejected": f"{CONV}\n\nAssistant: Give up ({i})."}


def _write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------- loading


def test_load_jsonl_ids_from_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    lines = [json.dumps(_pair(1)), "", json.dumps({**_pair(2), "extra": 1}), json.dumps(_pair(3))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    df, report = load_pairs(path)
    assert list(df.columns) == ["id", "chosen", "rejected"]
    assert df["id"].tolist() == ["pair00001", "pair00003", "pair00004"]
    assert df["chosen"].iloc[1] == _pair(2)["chosen"]
    assert report == {"source": str(path), "rows_read": 3, "dropped_identical": 0,
                      "dropped_empty": 0, "fingerprint": fingerprint(df)}


def test_gz_and_json_array_match_jsonl(tmp_path: Path) -> None:
    recs = [_pair(i) for i in range(3)]
    plain = _write_jsonl(tmp_path / "p.jsonl", recs)
    gz = tmp_path / "p.jsonl.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    arr = tmp_path / "p.json"
    arr.write_text(json.dumps(recs, indent=1), encoding="utf-8")
    a, _ = load_pairs(plain)
    b, _ = load_pairs(gz)
    c, _ = load_pairs(arr)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, c)  # record numbers = line numbers here


@pytest.mark.parametrize("bad_line, expected", [
    ('{"chosen": "a", "rejected": ', "malformed JSON"),
    ('["a", "b"]', "expected a JSON object, found list"),
    ('{"chosen": "\\n\\nHuman: x"}', "missing key 'rejected'; keys found: chosen"),
    ('{"chosen": "x", "rejected": null}', "'rejected' must be a string, got NoneType"),
    ('{"chosen": 3, "rejected": "x"}', "'chosen' must be a string, got int"),
])
def test_malformed_line_names_file_and_line(tmp_path: Path, bad_line: str, expected: str) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(_pair(1)) + "\n" + json.dumps(_pair(2)) + "\n" + bad_line + "\n",
                    encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_pairs(path)
    assert f"{path}, line 3: " in str(err.value)
    assert expected in str(err.value)


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl.gz"
    good = json.dumps(_pair(1)).encode() + b"\n"
    bad = b'{"chosen": "caf\xe9", "rejected": "x"}\n'
    path.write_bytes(gzip.compress(good + bad + good))
    with pytest.raises(DataError, match=r"pairs\.jsonl\.gz, line 2: not valid UTF-8"):
        load_pairs(path)


def test_identical_and_empty_pairs_are_dropped_and_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    same = _pair(9)["chosen"]
    recs = [_pair(1), {"chosen": same, "rejected": same}, {"chosen": "  ", "rejected": "x"},
            {"chosen": "", "rejected": ""}, _pair(5)]
    path = _write_jsonl(tmp_path / "p.jsonl", recs)
    with caplog.at_level(logging.WARNING, logger="driftlib.datasets.pairs"):
        df, report = load_pairs(path)
    assert df["id"].tolist() == ["pair00001", "pair00005"]
    assert report["rows_read"] == 5
    assert report["dropped_identical"] == 1 and report["dropped_empty"] == 2
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "dropped 2 pair(s) with an empty" in messages
    assert "dropped 1 pair(s) whose chosen and rejected texts are identical" in messages


def test_unsupported_missing_and_empty_files(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("chosen,rejected\n")
    with pytest.raises(DataError, match=r"p\.csv: unsupported"):
        load_pairs(tmp_path / "p.csv")
    with pytest.raises(DataError, match=r"gone\.jsonl: file not found"):
        load_pairs(tmp_path / "gone.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: no usable pairs"):
        load_pairs(tmp_path / "empty.jsonl")


def test_hub_source_via_monkeypatched_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls: list[tuple[tuple, dict]] = []

    def fake_load_dataset(*args: Any, **kwargs: Any) -> datasets.Dataset:
        calls.append((args, kwargs))
        recs = [_pair(1), {"chosen": "same", "rejected": "same"}, _pair(3)]
        return datasets.Dataset.from_list(recs)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    df, report = load_pairs("hf:Anthropic/hh-rlhf", data_dir="harmless-base", split="test")
    assert calls == [(("Anthropic/hh-rlhf",), {"split": "test", "data_dir": "harmless-base"})]
    assert df["id"].tolist() == ["pair00001", "pair00003"]
    assert report["source"] == "hf:Anthropic/hh-rlhf/harmless-base[test]"
    assert report["rows_read"] == 3 and report["dropped_identical"] == 1

    monkeypatch.setattr(datasets, "load_dataset",
                        lambda *a, **k: {"chosen": ["a", "b"], "rejected": ["c", None]})
    with pytest.raises(DataError, match=r"hf:x/y\[test\], row 2: 'rejected' must be a string"):
        load_pairs("hf:x/y")


# ------------------------------------------------------------------------------- sampling


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"pair{i:05d}" for i in range(1, n + 1)],
                         "chosen": [f"c{i}" for i in range(n)],
                         "rejected": [f"r{i}" for i in range(n)]})


def test_sample_pairs_all_when_n_is_none_zero_or_large() -> None:
    df = _frame(10)
    for n in (None, 0, 10, 50):
        out = sample_pairs(df, n, seed=3)
        pd.testing.assert_frame_equal(out, df)
        assert out is not df


def test_sample_pairs_seeded_sorted_and_nested() -> None:
    df = _frame(200)
    out = sample_pairs(df, 30, seed=3)
    assert len(out) == 30 and out["id"].is_unique
    positions = [int(i[4:]) for i in out["id"]]
    assert positions == sorted(positions)  # original order kept
    assert out.index.tolist() == list(range(30))
    assert sample_pairs(df, 30, seed=3)["id"].tolist() == out["id"].tolist()
    assert sample_pairs(df, 30, seed=4)["id"].tolist() != out["id"].tolist()
    assert set(out["id"]) <= set(sample_pairs(df, 60, seed=3)["id"])
    with pytest.raises(ConfigError):
        sample_pairs(df, -1, seed=0)


# ------------------------------------------------------------------------------- transcripts


def test_parse_transcript_roles_and_contents() -> None:
    turns = parse_transcript(_pair(1)["chosen"])
    assert turns == [
        {"role": "user", "content": "How do I bake bread?"},
        {"role": "assistant", "content": "Mix flour and water."},
        {"role": "user", "content": "And then?"},
        {"role": "assistant", "content": "Knead it (1)."},
    ]
    # marker at the very start (no leading blank line) and a blank lead-in are both fine
    assert parse_transcript("Human: hi\n\nAssistant: yo") == parse_transcript(" \n\n\nHuman: hi"
                                                                               "\n\nAssistant: yo")


def test_parse_transcript_inline_marker_is_content_and_empty_answer_kept() -> None:
    turns = parse_transcript("\n\nHuman: a  Human: b\n\nAssistant:")
    assert turns == [{"role": "user", "content": "a  Human: b"},
                     {"role": "assistant", "content": ""}]


def test_parse_transcript_merges_consecutive_turns() -> None:
    text = "\n\nHuman: q\n\nAssistant: one\n\nAssistant: two\n\nHuman: r\n\nAssistant: s"
    raw = parse_transcript(text, merge_consecutive=False)
    assert [t["role"] for t in raw] == ["user", "assistant", "assistant", "user", "assistant"]
    merged = parse_transcript(text)
    assert [t["role"] for t in merged] == ["user", "assistant", "user", "assistant"]
    assert merged[1]["content"] == "one\n\ntwo"


def test_parse_transcript_errors() -> None:
    with pytest.raises(DataError, match=r"f\.jsonl, line 2, chosen: text before the first"):
        parse_transcript("preamble\n\nHuman: x\n\nAssistant: y", where="f.jsonl, line 2, chosen")
    with pytest.raises(DataError, match="no 'Human:' or 'Assistant:' turn"):
        parse_transcript("   ")


def test_shared_prefix_chars() -> None:
    p = _pair(1)
    n = shared_prefix_chars(p["chosen"], p["rejected"])
    assert p["chosen"][:n] == p["rejected"][:n] and p["chosen"][n] != p["rejected"][n]
    assert n == len(CONV) + len("\n\nAssistant: ")
    assert shared_prefix_chars("abc", "abc") == 3
    assert shared_prefix_chars("", "abc") == 0
    assert shared_prefix_chars("xbc", "abc") == 0


# ------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def hh_pairs(hh_rlhf_path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    return load_pairs(hh_rlhf_path)


def test_real_hh_rlhf_loads_every_row(hh_pairs: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    df, report = hh_pairs
    assert report["rows_read"] == 2312
    assert len(df) + report["dropped_identical"] + report["dropped_empty"] == 2312
    # measured on harmless-base test: no identical and no empty pairs
    assert report["dropped_identical"] == 0 and report["dropped_empty"] == 0
    assert df["id"].iloc[0] == "pair00001" and df["id"].iloc[-1] == "pair02312"


def test_real_hh_rlhf_transcripts_alternate_and_end_with_assistant(
        hh_pairs: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    df, _ = hh_pairs
    not_alternating_raw = 0
    for row in df.itertuples():
        for column in ("chosen", "rejected"):
            text = getattr(row, column)
            turns = parse_transcript(text, where=f"{row.id} {column}")
            roles = [t["role"] for t in turns]
            assert roles[0] == "user" and roles[-1] == "assistant", (row.id, column)
            assert all(a != b for a, b in zip(roles, roles[1:])), (row.id, column)
            raw = [t["role"] for t in parse_transcript(text, merge_consecutive=False)]
            not_alternating_raw += any(a == b for a, b in zip(raw, raw[1:]))
    # measured: 13 transcripts (of 4,624) have two assistant turns in a row as written
    assert not_alternating_raw == 13


def test_real_hh_rlhf_pairs_differ_only_at_the_end(
        hh_pairs: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    df, _ = hh_pairs
    share_all_but_last_answer = 0
    fractions = []
    for chosen, rejected in zip(df["chosen"], df["rejected"]):
        n = shared_prefix_chars(chosen, rejected)
        fractions.append(n / max(len(chosen), len(rejected)))
        last = chosen.rfind("\n\nAssistant:") + len("\n\nAssistant:")
        share_all_but_last_answer += n >= last
    # measured: 2,308 of 2,312 pairs share everything up to the final answer marker
    assert share_all_but_last_answer == 2308
    assert sorted(fractions)[len(fractions) // 2] > 0.5  # median shared share of the text


# ------------------------------------------------------------------------------- bundled


def test_bundled_pairs_load() -> None:
    df, report = load_pairs("bundled")
    assert report["source"] == "bundled:preference_pairs.jsonl"
    assert len(df) >= 100 and df["id"].is_unique
    for chosen, rejected in zip(df["chosen"], df["rejected"]):
        assert parse_transcript(chosen)[-1]["role"] == "assistant"
        assert parse_transcript(rejected)[-1]["role"] == "assistant"


# ------------------------------------------------------------------------------- too few pairs


def test_one_pair_fails_at_preparation_naming_the_file_and_the_key(tmp_path: Path, capsys) -> None:
    """Before: one usable pair (a one-pair file, or --n 1) was written out, and phase 2 stopped later with
    'diffs: split-half stability needs at least 2 rows, got 1', naming neither the file nor the key."""
    from driftlib.cli import main
    from driftlib.steer.vectors import split_half_stability

    with pytest.raises(DataError, match="at least 2 rows"):  # what phase 2 would have said
        split_half_stability(np.ones((1, 2, 3)))
    one = _write_jsonl(tmp_path / "one.jsonl", [_pair(1), {"chosen": "x", "rejected": "x"}])
    with pytest.raises(DataError) as info:
        load_pairs(one)
    message = str(info.value)
    assert str(one) in message and "only 1 usable pair" in message and "data.pairs.source" in message
    # the command the workflow runs (data.pairs.n: 20) stops with one line, and writes nothing
    out = tmp_path / "pairs.parquet"
    assert main(["prepare-pairs", "--source", str(one), "--n", "20", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("driftlib: error: ") and str(one) in err and "data.pairs.source" in err
    assert not out.exists()
    # n = 1 from a larger file names the key
    many = _write_jsonl(tmp_path / "many.jsonl", [_pair(i) for i in range(5)])
    assert main(["prepare-pairs", "--source", str(many), "--n", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "data.pairs.n" in err and "at least 2" in err and not out.exists()
    with pytest.raises(ConfigError, match="data.pairs.n"):
        sample_pairs(_frame(10), 1, seed=0)
    assert len(sample_pairs(_frame(10), 2, seed=0)) == 2
