"""A rule's code inputs: the driftlib files a command runs, from the import graph, lazy imports
included, on a copy of the package that the tests edit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from driftlib.cli.codegraph import command_entry, command_sources

SRC = Path(__file__).resolve().parents[1] / "src" / "driftlib"


@pytest.fixture()
def pkg(tmp_path: Path) -> Path:
    root = tmp_path / "driftlib"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def names(files: list[Path], root: Path) -> set[str]:
    return {f.relative_to(root).as_posix() for f in files}


def test_a_sweep_runs_the_steering_code_and_scoring_runs_no_model_code(pkg: Path) -> None:
    sweep = names(command_sources("sweep", pkg), pkg)
    assert {"steer/hooks.py", "steer/operators.py", "steer/spec.py", "steer/sweep.py", "model/loading.py",
            "phases/same_arch/run.py"} <= sweep
    assert not any(n.startswith("cli/") or n.endswith("__init__.py") for n in sweep)
    score = names(command_sources("score", pkg), pkg)
    assert "stats/aqi.py" in score and "phases/baseline/scoring.py" in score
    assert not any(n.startswith(("model/", "steer/")) for n in score)


def test_a_lazy_import_anywhere_in_a_reached_module_is_followed(pkg: Path) -> None:
    aqi = pkg / "stats" / "aqi.py"
    assert "steer/hooks.py" not in names(command_sources("score", pkg), pkg)
    aqi.write_text(aqi.read_text() + "\n\ndef _later():\n    from driftlib.steer import hooks\n    return hooks\n")
    assert "steer/hooks.py" in names(command_sources("score", pkg), pkg)


def test_imports_for_annotations_only_are_not_followed(pkg: Path) -> None:
    aqi = pkg / "stats" / "aqi.py"
    aqi.write_text(aqi.read_text() + "\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                      "    from driftlib.steer import hooks\n")
    assert "steer/hooks.py" not in names(command_sources("score", pkg), pkg)


def test_the_entry_module_counts_only_what_the_entry_function_reaches(pkg: Path) -> None:
    """``sweep`` and ``cost`` share phases/same_arch/run.py: an import inside ``cost`` is code of
    the cost rule only."""
    run = pkg / "phases" / "same_arch" / "run.py"
    text = run.read_text()
    marker = "    model, tokenizer, named, kind, _ = own_and_random(source, vectors, kind, steering, seed)\n    rows ="
    assert marker in text
    run.write_text(text.replace(marker, "    from driftlib.stats import equilibria  # noqa: F401\n" + marker))
    assert "stats/equilibria.py" in names(command_sources("cost", pkg), pkg)
    assert "stats/equilibria.py" not in names(command_sources("sweep", pkg), pkg)


def test_the_entry_is_the_one_function_the_command_imports() -> None:
    assert command_entry("sweep") == ("driftlib.phases.same_arch.run", "sweep")
    assert command_entry("score") == ("driftlib.phases.baseline.scoring", "score_activation_file")
    assert command_entry("check-config") == ("driftlib.core.config", "describe_file")


def test_results_are_kept_on_disk_until_a_source_file_changes(pkg: Path, monkeypatch) -> None:
    """A second plan reads the kept result without parsing anything; an edited file (its size or
    time changes) makes the next call read the source again, and see the edit."""
    from driftlib.cli import codegraph

    first = command_sources("score", pkg)
    cache = codegraph._cache_file(pkg)
    assert cache.is_file()

    def no_parsing(command: str, root: Path) -> list[Path]:
        raise AssertionError("parsed again although nothing changed")

    monkeypatch.setattr(codegraph, "_command_sources", no_parsing)
    assert command_sources("score", pkg) == first
    monkeypatch.undo()

    edited = pkg / "stats" / "aqi.py"
    edited.write_text(edited.read_text(encoding="utf-8") + "\nfrom driftlib.steer import hooks  # noqa\n",
                      encoding="utf-8")
    after = names(command_sources("score", pkg), pkg)
    assert "steer/hooks.py" in after and "steer/hooks.py" not in names(first, pkg)
