"""Calibration prompts (what the conditional operator's condition is fitted on) never overlap the
evaluation prompts, and are balanced by axiom and label."""

from __future__ import annotations

from pathlib import Path

from driftlib.cli import main
from driftlib.core.artifacts import read_table


def test_calibration_and_evaluation_prompts_never_overlap(tmp_path: Path) -> None:
    ev, cal = tmp_path / "prompts.parquet", tmp_path / "calibration.parquet"
    assert main(["-q", "prepare-prompts", "--per-group", "20", "--seed", "3", "--out", str(ev),
                 "--calibration-out", str(cal)]) == 0
    e, c = read_table(ev)[0], read_table(cal)[0]
    assert not set(e["id"]) & set(c["id"]) and not set(e["text"]) & set(c["text"])
    # the bundled sample has 24 prompts per (axiom, label): 20 evaluate, the other 4 calibrate
    assert c.groupby(["axiom", "safety_label"]).size().eq(4).all() and len(c) == 56
    # capped per group, seeded, and still disjoint
    cal2 = tmp_path / "calibration2.parquet"
    assert main(["-q", "prepare-prompts", "--per-group", "12", "--seed", "3", "--out", str(ev),
                 "--calibration-out", str(cal2), "--calibration-per-group", "5"]) == 0
    e2, c2 = read_table(ev)[0], read_table(cal2)[0]
    assert c2.groupby(["axiom", "safety_label"]).size().eq(5).all()
    assert not set(e2["id"]) & set(c2["id"])
