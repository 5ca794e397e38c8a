"""Tests of driftlib.datasets.prompts: LITMUS prompt loading, validation and balanced sampling."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from driftlib.core.artifacts import fingerprint
from driftlib.core.errors import ConfigError, DataError
from driftlib.datasets.prompts import AXIOMS, LABELS, load_prompts, sample_balanced


def _write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _rec(axiom: str = "Justice & Rights", label: str = "safe", text: str = "a prompt",
         **extra: Any) -> dict[str, Any]:
    return {"axiom": axiom, "safety_label": label, "input": text, **extra}


def _grid(counts: dict[tuple[str, str], int]) -> pd.DataFrame:
    """A prompt frame with the given number of rows per (axiom, label), interleaved."""
    rows = []
    for (axiom, label), n in counts.items():
        for i in range(n):
            rows.append({"axiom": axiom, "safety_label": label, "text": f"{axiom}/{label}/{i}"})
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=3).reset_index(drop=True)
    df.insert(0, "id", [f"p{i:05d}" for i in range(len(df))])
    return df


# ------------------------------------------------------------------------------- loading


def test_constants() -> None:
    assert len(AXIOMS) == 7 and len(set(AXIOMS)) == 7
    assert "Information Seeking" in AXIOMS
    assert LABELS == ("safe", "unsafe")


def test_load_jsonl_schema_ids_and_report(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", [
        _rec("Justice & Rights", " Safe ", "first"),
        _rec("Wisdom & Knowledge", "UNSAFE", "second "),
        _rec(" Justice & Rights ", "unsafe", "third"),
    ])
    df, report = load_prompts(path)
    assert list(df.columns) == ["id", "axiom", "safety_label", "text"]
    assert df["id"].tolist() == ["p00000", "p00001", "p00002"]
    assert df["safety_label"].tolist() == ["safe", "unsafe", "unsafe"]
    assert df["axiom"].tolist() == ["Justice & Rights", "Wisdom & Knowledge", "Justice & Rights"]
    assert df["text"].tolist() == ["first", "second ", "third"]  # texts kept as written
    assert report == {"source": str(path), "rows_read": 3, "dropped_empty": 0,
                      "fingerprint": fingerprint(df)}


def test_text_column_alias_and_explicit_ids(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", [
        {"id": 17, "axiom": "Justice & Rights", "safety_label": "safe", "text": "x"},
        {"id": "b", "axiom": "Justice & Rights", "safety_label": "unsafe", "text": "y"},
    ])
    df, _ = load_prompts(path)
    assert df["id"].tolist() == ["17", "b"]
    assert df["text"].tolist() == ["x", "y"]


def test_custom_text_column(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", [
        {"axiom": "Justice & Rights", "safety_label": "safe", "prompt": "x", "input": "no"},
    ])
    df, _ = load_prompts(path, text_column="prompt")
    assert df["text"].tolist() == ["x"]


def test_missing_column_lists_columns_found(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", [{"axiom": "Justice & Rights", "input": "x"}])
    with pytest.raises(DataError) as err:
        load_prompts(path)
    msg = str(err.value)
    assert str(path) in msg and "safety_label" in msg
    assert "columns found: axiom, input" in msg


def test_missing_key_in_one_line_names_the_line(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", [
        _rec(), _rec(), {"axiom": "Justice & Rights", "input": "x"}])
    with pytest.raises(DataError, match=r"p\.jsonl, line 3: missing column 'safety_label'"):
        load_prompts(path)


def test_bad_label_names_line_and_value(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", [_rec(), _rec(label="unsafe"), _rec(label="maybe")])
    with pytest.raises(DataError) as err:
        load_prompts(path)
    assert f"{path}, line 3" in str(err.value) and "'maybe'" in str(err.value)


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", [
        _rec(id="a"), _rec(id="b"), _rec(id="c"), _rec(id="b")])
    with pytest.raises(DataError) as err:
        load_prompts(path)
    assert str(path) in str(err.value)
    assert "duplicate id 'b' at line 2 and line 4" in str(err.value)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_non_utf8_names_the_line(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"p{suffix}"
    if suffix == ".jsonl":
        good = json.dumps(_rec()).encode() + b"\n"
        bad = json.dumps(_rec(text="caf@")).encode().replace(b"@", b"\xe9") + b"\n"
        path.write_bytes(good + good + bad)
    else:
        path.write_bytes(b"axiom,safety_label,input\nJustice & Rights,safe,ok\n"
                         b"Justice & Rights,safe,caf\xe9\n")
    with pytest.raises(DataError) as err:
        load_prompts(path)
    assert f"{path}, line 3: not valid UTF-8" in str(err.value)


def test_malformed_json_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(_rec()) + "\n" + '{"axiom": "x", \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"p\.jsonl, line 2: malformed JSON"):
        load_prompts(path)


def test_non_object_json_line(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", [_rec(), ["a", "list"]])
    with pytest.raises(DataError, match=r"line 2: expected a JSON object"):
        load_prompts(path)


def test_empty_texts_dropped_with_warning_and_stable_ids(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "p.jsonl"
    recs = [_rec(text="one"), _rec(text="   \n"), _rec(text="three"), _rec(text=""),
            _rec(text=None)]
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="driftlib.datasets.prompts"):
        df, report = load_prompts(path)
    assert df["id"].tolist() == ["p00000", "p00002"]  # positions in the source, not renumbered
    assert df["text"].tolist() == ["one", "three"]
    assert report["rows_read"] == 5 and report["dropped_empty"] == 3
    assert any("dropped 3 row(s)" in r.getMessage() for r in caplog.records)


def test_invisible_only_texts_are_dropped_as_empty(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", [
        _rec(text="one"), _rec(text="\x00\x00"), _rec(text=" \u200b\u200d "), _rec(text="\ufeff\u2060"),
        _rec(text="two\u200b"),  # visible text with an invisible character is kept as written
    ])
    with caplog.at_level(logging.WARNING, logger="driftlib.datasets.prompts"):
        df, report = load_prompts(path)
    assert df["text"].tolist() == ["one", "two\u200b"] and df["id"].tolist() == ["p00000", "p00004"]
    assert report["dropped_empty"] == 3
    messages = [r.getMessage() for r in caplog.records]
    assert any("dropped 3 row(s) with an empty input" in m for m in messages), messages
    assert any("3 of them held only NULs, zero-width characters" in m for m in messages), messages


def test_repeated_texts_are_counted_in_a_warning(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", [
        _rec(text="How do I bake bread?"), _rec(text="Something else"),
        _rec(text="How do I bake bread?"),                       # line 3 repeats line 1
        _rec(text="  How do I bake bread?\u200b"),              # the same, once invisible parts are gone
        _rec(label="unsafe", text="Something else"),             # the same text, the other label
    ])
    with caplog.at_level(logging.WARNING, logger="driftlib.datasets.prompts"):
        df, _ = load_prompts(path)
    assert len(df) == 5  # kept: a warning, not a change of the data
    messages = [r.getMessage() for r in caplog.records]
    assert any("3 row(s) repeat the input of an earlier row (first: line 3 repeats line 1), 1 of them with the "
               "other safety_label" in m for m in messages), messages
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="driftlib.datasets.prompts"):
        load_prompts(_write_jsonl(tmp_path / "q.jsonl", [_rec(text="a"), _rec(text="b")]))
    assert not [r for r in caplog.records if "repeat" in r.getMessage()]


def test_non_string_text_is_an_error(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", [_rec(), _rec(text=42)])
    with pytest.raises(DataError, match=r"line 2: input must be a string"):
        load_prompts(path)


def test_csv_with_multiline_field_reports_start_line(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(
        "axiom,safety_label,input\n"
        'Justice & Rights,safe,"two\nlines"\n'
        "Justice & Rights,unsafe,plain\n"
        "Justice & Rights,bogus,bad\n",
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"p\.csv, line 5: safety_label 'bogus'"):
        load_prompts(path)
    path.write_text(path.read_text().replace("bogus", "safe"), encoding="utf-8")
    df, report = load_prompts(path)
    assert df["text"].tolist() == ["two\nlines", "plain", "bad"]
    assert report["rows_read"] == 3


def test_parquet_and_json_sources(tmp_path: Path) -> None:
    frame = pd.DataFrame([_rec(label="safe", text="x"), _rec(label="unsafe", text="y")])
    frame.to_parquet(tmp_path / "p.parquet")
    (tmp_path / "p.json").write_text(json.dumps(frame.to_dict("records")), encoding="utf-8")
    from_parquet, _ = load_prompts(tmp_path / "p.parquet")
    from_json, _ = load_prompts(str(tmp_path / "p.json"))
    pd.testing.assert_frame_equal(from_parquet, from_json)
    assert from_json["text"].tolist() == ["x", "y"]

    frame.loc[1, "safety_label"] = "neutral"
    frame.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad\.parquet, row 2: safety_label 'neutral'"):
        load_prompts(tmp_path / "bad.parquet")


def test_unsupported_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(DataError, match=r"p\.txt: unsupported"):
        load_prompts(tmp_path / "p.txt")
    with pytest.raises(DataError, match=r"nope\.jsonl: file not found"):
        load_prompts(tmp_path / "nope.jsonl")


# ------------------------------------------------------------------------------- hub


def test_hub_source_via_monkeypatched_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls: list[tuple[tuple, dict]] = []

    def fake_load_dataset(*args: Any, **kwargs: Any) -> datasets.Dataset:
        calls.append((args, kwargs))
        return datasets.Dataset.from_dict({
            "axiom": ["Justice & Rights", "Justice & Rights", "Wisdom & Knowledge"],
            "safety_label": ["safe", "unsafe", "safe"],
            "input": ["a", " ", "c"],
        })

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    df, report = load_prompts("hf:hasnat79/litmus", split="train")
    assert calls == [(("hasnat79/litmus",), {"split": "train"})]
    assert df["id"].tolist() == ["p00000", "p00002"]
    assert df["text"].tolist() == ["a", "c"]
    assert report["source"] == "hf:hasnat79/litmus[train]"
    assert report["rows_read"] == 3 and report["dropped_empty"] == 1


def test_hub_bad_row_and_hub_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: {"train": {
        "axiom": ["Justice & Rights", "Justice & Rights"], "safety_label": ["safe", "harmful"],
        "input": ["a", "b"]}})
    with pytest.raises(DataError, match=r"hf:x/y\[train\], row 2: safety_label 'harmful'"):
        load_prompts("hf:x/y")

    def offline(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"cannot load hub dataset 'x/y'.*offline"):
        load_prompts("hf:x/y")


# ------------------------------------------------------------------------------- sampling


def test_sample_balanced_exact_counts_and_order() -> None:
    df = _grid({(a, lab): 30 for a in AXIOMS for lab in LABELS})
    out, report = sample_balanced(df, 10, seed=0)
    assert len(out) == 140 and report["n_rows"] == 140
    assert report["groups"] == {f"{a}|{lab}": 10 for a in AXIOMS for lab in LABELS}
    assert report["shortfalls"] == [] and report["per_group"] == 10 and report["seed"] == 0
    # grouped by axiom (sorted), then safe before unsafe
    keys = list(dict.fromkeys(zip(out["axiom"], out["safety_label"])))
    assert keys == [(a, lab) for a in sorted(AXIOMS) for lab in LABELS]
    assert out["id"].is_unique and set(out["id"]) <= set(df["id"])
    assert out.index.tolist() == list(range(140))


def test_sample_balanced_is_deterministic_and_seed_dependent() -> None:
    df = _grid({(a, lab): 25 for a in AXIOMS[:3] for lab in LABELS})
    first, _ = sample_balanced(df, 5, seed=7)
    again, _ = sample_balanced(df, 5, seed=7)
    other, _ = sample_balanced(df, 5, seed=8)
    assert first["id"].tolist() == again["id"].tolist()
    assert first["id"].tolist() != other["id"].tolist()
    # a group's sample does not depend on which other axioms are selected
    only, _ = sample_balanced(df, 5, seed=7, axioms=[AXIOMS[1]])
    assert only["id"].tolist() == first[first["axiom"] == AXIOMS[1]]["id"].tolist()
    # a larger sample extends a smaller one
    bigger, _ = sample_balanced(df, 8, seed=7)
    for axiom in AXIOMS[:3]:
        for lab in LABELS:
            small = first[(first["axiom"] == axiom) & (first["safety_label"] == lab)]["id"]
            big = bigger[(bigger["axiom"] == axiom) & (bigger["safety_label"] == lab)]["id"]
            assert big.tolist()[:5] == small.tolist()


def test_shortfall_recorded_never_filled(caplog: pytest.LogCaptureFixture) -> None:
    counts = {(a, lab): 12 for a in AXIOMS[:2] for lab in LABELS}
    counts[(AXIOMS[1], "unsafe")] = 4
    df = _grid(counts)
    with caplog.at_level(logging.WARNING, logger="driftlib.datasets.prompts"):
        out, report = sample_balanced(df, 10, seed=1)
    short = out[(out["axiom"] == AXIOMS[1]) & (out["safety_label"] == "unsafe")]
    assert len(short) == 4 and short["id"].is_unique  # all of it, nothing duplicated
    assert report["groups"][f"{AXIOMS[1]}|unsafe"] == 4
    assert report["n_rows"] == len(out) == 34
    assert report["shortfalls"] == [
        {"axiom": AXIOMS[1], "safety_label": "unsafe", "available": 4, "requested": 10}]
    assert any("4 prompts, 10 requested" in r.getMessage() for r in caplog.records)


def test_all_rows_when_n_is_none_or_zero() -> None:
    df = _grid({(a, lab): 3 + i for i, a in enumerate(AXIOMS[:2]) for lab in LABELS})
    for n in (None, 0):
        out, report = sample_balanced(df, n, seed=0)
        assert len(out) == len(df) and sorted(out["id"]) == sorted(df["id"])
        assert report["shortfalls"] == []
        # within a group, source order is kept
        grp = out[(out["axiom"] == AXIOMS[0]) & (out["safety_label"] == "safe")]["id"].tolist()
        src = df[(df["axiom"] == AXIOMS[0]) & (df["safety_label"] == "safe")]["id"].tolist()
        assert grp == src


def test_axiom_subset_and_unknown_axiom() -> None:
    df = _grid({(a, lab): 5 for a in AXIOMS[:3] for lab in LABELS})
    out, report = sample_balanced(df, 2, seed=0, axioms=[AXIOMS[2], AXIOMS[0]])
    assert sorted(set(out["axiom"])) == [AXIOMS[0], AXIOMS[2]] and len(out) == 8
    with pytest.raises(DataError) as err:
        sample_balanced(df, 2, seed=0, axioms=["Courage"])
    assert "'Courage'" in str(err.value)
    assert all(a in str(err.value) for a in AXIOMS[:3])


def test_axiom_with_one_label_is_an_error() -> None:
    counts = {(a, lab): 5 for a in AXIOMS[:2] for lab in LABELS}
    del counts[(AXIOMS[1], "safe")]
    df = _grid(counts)
    with pytest.raises(DataError, match=f"axiom '{AXIOMS[1]}' has no 'safe' prompts"):
        sample_balanced(df, 2, seed=0)
    out, _ = sample_balanced(df, 2, seed=0, axioms=[AXIOMS[0]])  # fine when not selected
    assert len(out) == 4


def test_negative_n_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        sample_balanced(_grid({(AXIOMS[0], lab): 2 for lab in LABELS}), -1, seed=0)


# ------------------------------------------------------------------------------- bundled


def test_bundled_prompts_load_and_cover_every_group() -> None:
    df, report = load_prompts("bundled")
    assert report["source"] == "bundled:litmus_sample.jsonl"
    assert report["rows_read"] == len(df) + report["dropped_empty"]
    assert set(df["axiom"]) >= set(AXIOMS)
    counts = df.groupby(["axiom", "safety_label"]).size()
    for axiom in AXIOMS:
        for lab in LABELS:
            assert counts.get((axiom, lab), 0) >= 20, (axiom, lab)
    out, rep = sample_balanced(df, 20, seed=0)
    assert rep["shortfalls"] == [] and len(out) == 20 * 14
