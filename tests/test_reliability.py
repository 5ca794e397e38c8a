"""Reliability checks that need Snakemake itself: the config files it reads, nested ``--config``
values, and the advice printed after an error. Each Snakemake call is a dry run (about 3 s) or one
short job, in a temporary copy of the workflow, in its own process group with a timeout that kills
the group (tests/snakemake_run.py)."""

from __future__ import annotations

import json
from pathlib import Path

from snakemake_run import make_workdir, run_snakemake

TIMEOUT = 180


def _lines(text: str, wanted: str) -> list[int]:
    return [i for i, line in enumerate(text.splitlines(), start=1) if line == wanted]


def test_nested_config_value_reaches_the_rules(tmp_path: Path) -> None:
    """Before: `--config "aqi={'bootstrap':500}"` (the README's way to change one setting) was refused
    with "'500' is not of type 'integer'": Snakemake hands nested values over as strings."""
    workdir = make_workdir(tmp_path / "wd")
    result = run_snakemake(workdir, "-n", "-p", "--config", "aqi={'bootstrap': 500}", timeout=TIMEOUT)
    assert "--bootstrap 500" in result.stdout and "--bootstrap 1000" not in result.stdout
    # the other aqi settings keep the config file's values (Snakemake merges the nested dict)
    assert "--permutations 200" in result.stdout


def test_duplicate_keys_are_refused_by_the_workflow(tmp_path: Path) -> None:
    """Before: a second `seed:` (or a second `llama:` model) silently replaced the first."""
    workdir = make_workdir(tmp_path / "wd")
    config = workdir / "config" / "config.yaml"
    text = config.read_text()
    seed_line = _lines(text, next(line for line in text.splitlines() if line.startswith("seed:")))[0]
    config.write_text(text + "\nseed: 7\n")
    last = len((text + "\nseed: 7\n").splitlines())
    result = run_snakemake(workdir, "-n", check=False, timeout=TIMEOUT)
    assert result.returncode != 0 and "Traceback" not in result.stdout
    assert (f"config: config/config.yaml: duplicate key seed at line {seed_line} and line {last}"
            in result.stdout), result.stdout[-2000:]
    # the same for a file given with --configfile (read by Snakemake before the Snakefile runs)
    config.write_text(text)
    study = workdir / "study.yaml"
    doubled = text.replace("  mistral:\n", "  llama:\n    aligned: tiny:qwen2-aligned\n  mistral:\n", 1)
    study.write_text(doubled)
    first, second = _lines(doubled, "  llama:")
    result = run_snakemake(workdir, "-n", "--configfile", str(study), check=False, timeout=TIMEOUT)
    assert result.returncode != 0 and "Traceback" not in result.stdout
    assert f"duplicate key models.llama at line {first} and line {second}" in result.stdout, result.stdout[-2000:]
    assert str(study) in result.stdout


def test_default_config_that_is_not_utf8_is_one_error(tmp_path: Path) -> None:
    """Before: a UnicodeDecodeError traceback from inside Snakemake's config reader."""
    workdir = make_workdir(tmp_path / "wd")
    config = workdir / "config" / "config.yaml"
    config.write_bytes(config.read_text().replace("# one seed", "# caf\u00e9, one seed").encode("latin-1"))
    result = run_snakemake(workdir, "-n", check=False, timeout=TIMEOUT)
    assert result.returncode != 0 and "Traceback" not in result.stdout
    assert "config: config/config.yaml: not valid UTF-8 (byte 0xe9 at line" in result.stdout, result.stdout[-2000:]


def test_failed_job_names_the_file_and_the_advice_says_when_to_unlock(tmp_path: Path) -> None:
    """A source with one preference pair stops at prepare_pairs (before: in phase 2, naming neither
    the file nor the key); after the error the workflow no longer says to unlock unconditionally."""
    workdir = make_workdir(tmp_path / "wd")
    pairs = workdir / "one_pair.jsonl"
    conversation = "\n\nHuman: How do I bake bread?"
    pairs.write_text(json.dumps({"chosen": conversation + "\n\nAssistant: Knead it.",
                                 "rejected": conversation + "\n\nAssistant: Give up."}) + "\n")
    result = run_snakemake(workdir, "results/data/pairs.parquet", "--cores", "1",
                           "--config", f"data={{'pairs': {{'source': '{pairs}'}}}}", check=False, timeout=TIMEOUT)
    out = result.stdout
    assert result.returncode != 0
    assert f"{pairs}: only 1 usable pair" in out and "data.pairs.source" in out, out[-3000:]
    assert not (workdir / "results" / "data" / "pairs.parquet").exists()
    advice = out[out.index("alignment-drift stopped with an error"):]
    assert "pgrep -af snakemake" in advice and ".snakemake/locks/" in advice
    assert "Only when none is" in advice and "snakemake --unlock" in advice
