"""The data step with the synthetic world on: ``prepare-world`` and calibration prompts from their own source."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from driftlib.core.artifacts import read_table
from driftlib.core.errors import ConfigError
from driftlib.datasets.prompts import load_prompts
from driftlib.datasets.synthetic import WORLD_FILES, WorldSpec, make_world, write_world
from driftlib.phases.data.prepare import prepare_prompts, prepare_world

SMALL = {"pretrain_per_group": 4, "align_per_group": 4, "evaluation_per_group": 4, "calibration_per_group": 2,
         "pairs_per_axiom": 2, "dealign_per_axiom": 2, "task_twins_per_axiom": 1, "anchors": 12, "neutral": 3,
         "prose_paragraphs": 2}


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "world"
    prepare_world(spec=SMALL, seed=3, out=out)
    return out


def test_prepare_world_writes_the_spec_world(world_dir: Path, tmp_path: Path) -> None:
    expected = write_world(make_world(WorldSpec(seed=3, **SMALL)), tmp_path / "direct")
    assert sorted(p.name for p in world_dir.iterdir()) == sorted(WORLD_FILES.values())
    for key, path in expected.items():
        assert (world_dir / WORLD_FILES[key]).read_bytes() == path.read_bytes(), key


def test_prepare_world_names_a_bad_size() -> None:
    with pytest.raises(ConfigError, match="world"):
        prepare_world(spec={"no_such_size": 1}, seed=0, out="unused")
    with pytest.raises(ConfigError, match="even"):
        prepare_world(spec={"evaluation_per_group": 3}, seed=0, out="unused")


def test_calibration_prompts_come_from_their_own_source(world_dir: Path, tmp_path: Path) -> None:
    prompts, calibration = tmp_path / "prompts.parquet", tmp_path / "calibration.parquet"
    prepare_prompts(source=str(world_dir / "evaluation.jsonl"), split="train", per_group=None, axioms=None, seed=0,
                    out=prompts, calibration_out=calibration, calibration_per_group=None,
                    calibration_source=str(world_dir / "calibration.jsonl"))
    evaluation, _ = load_prompts(str(world_dir / "evaluation.jsonl"))
    expected, _ = load_prompts(str(world_dir / "calibration.jsonl"))
    got_prompts, got_calibration = read_table(prompts)[0], read_table(calibration)[0]
    assert sorted(got_prompts["id"]) == sorted(evaluation["id"])
    # every calibration request of the world, none of them an evaluation request
    assert sorted(got_calibration["id"]) == sorted(expected["id"])
    assert not set(got_calibration["text"]) & set(got_prompts["text"])
    counts = got_calibration.groupby(["axiom", "safety_label"]).size()
    assert (counts == SMALL["calibration_per_group"]).all() and len(counts) == 14


def test_calibration_prompts_drop_rows_shared_with_the_evaluation_prompts(world_dir: Path, tmp_path: Path) -> None:
    # a calibration source that repeats two evaluation requests: they are left out
    evaluation, _ = load_prompts(str(world_dir / "evaluation.jsonl"))
    calibration, _ = load_prompts(str(world_dir / "calibration.jsonl"))
    mixed = pd.concat([calibration, evaluation.iloc[:2]], ignore_index=True)
    source = tmp_path / "mixed.jsonl"
    mixed.rename(columns={"text": "input"}).to_json(source, orient="records", lines=True)
    out = tmp_path / "calibration.parquet"
    prepare_prompts(source=str(world_dir / "evaluation.jsonl"), split="train", per_group=None, axioms=None, seed=0,
                    out=tmp_path / "prompts.parquet", calibration_out=out, calibration_per_group=None,
                    calibration_source=str(source))
    assert sorted(read_table(out)[0]["id"]) == sorted(calibration["id"])
