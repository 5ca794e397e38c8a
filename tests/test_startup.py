"""Start-up: the numpy-only commands, the config check and the workflow's plan load no torch, and the
rule inputs that the plan computes (``code()``) are the same with the per-process caches.

Nothing here is timed (benchmarks/bench_startup.py measures the seconds); each check runs in a fresh
interpreter and reads its ``sys.modules``.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftlib.cli.codegraph import clear_caches, command_sources
from driftlib.core.artifacts import fingerprint, read_table, save_tensors, write_table

SRC = Path(__file__).resolve().parents[1] / "src"
TORCH = ("torch", "transformers", "peft")
#: the commands that compute from files with numpy/scipy/pandas only: no code they can reach imports torch
NUMPY_ONLY = ("score", "score-sweep", "score-collab", "evaluate-recovery", "transfer-efficiency", "fit-maps",
              "solve-game", "vectors", "summarize-baseline", "summarize-vectors", "summarize-steering",
              "summarize-operators", "summarize-transfer", "summarize-recovery", "summarize-collab",
              "summarize-games")
#: run in a fresh interpreter: the driftlib command in argv, then the torch modules it loaded (JSON)
RUN_COMMAND = (
    "import json, sys\nfrom driftlib.cli import main\n"
    "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as exc:\n    rc = exc.code\n"
    f"print(json.dumps([m for m in {TORCH!r} if m in sys.modules]))\nsys.exit(rc)\n"
)


def _run(code: str, *args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def _torch_modules(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _imports_torch(path: Path) -> set[str]:
    """The torch-family packages a source file imports anywhere (module level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    return names & set(TORCH)


@pytest.mark.parametrize("command", NUMPY_ONLY)
def test_no_code_a_numpy_only_command_can_run_imports_torch(command: str) -> None:
    """The whole import graph of the command (lazy imports included), so no branch loads torch."""
    found = {f"{path.parent.name}/{path.name}": sorted(hits) for path in command_sources(command)
             if (hits := _imports_torch(path))}
    assert found == {}


@pytest.fixture()
def scoring_files(tmp_path: Path) -> dict[str, Path]:
    """Prompts (40, one axiom), their hidden states [40, 1, 6] and a sweep file (own and random x 2
    lambdas) in which the safe prompts of the own vector move along the first axis with lambda."""
    rng = np.random.default_rng(0)
    n, d = 40, 6
    prompts = pd.DataFrame({"id": [f"p{i}" for i in range(n)], "axiom": ["A"] * n,
                            "safety_label": np.where(np.arange(n) % 2 == 0, "safe", "unsafe"), "text": ["t"] * n})
    fp = fingerprint(prompts)
    files = {"prompts": tmp_path / "prompts.parquet", "hidden": tmp_path / "hidden.safetensors",
             "sweep": tmp_path / "sweep.safetensors"}
    write_table(prompts, files["prompts"], metadata={"dataset_fingerprint": fp})
    save_tensors(files["hidden"], {"hidden": rng.standard_normal((n, 1, d)).astype(np.float32)},
                 metadata={"ids": list(prompts["id"]), "dataset_fingerprint": fp, "layers": [0], "n_layers": 1})
    safe = (np.arange(n) % 2 == 0)[None, :, None, None] * np.eye(d)[0]
    shift = 4.0 * np.array([0.0, 1.0])[:, None, None, None] * safe  # lambda 0: none; lambda 1: 4 along axis 0
    own = np.stack([rng.standard_normal((n, 1, d)) for _ in range(2)]) + shift
    save_tensors(files["sweep"], {"own": own.astype(np.float32),
                                  "random": rng.standard_normal((2, n, 1, d)).astype(np.float32)},
                 metadata={"model": "m", "lambdas": [0.0, 1.0], "measure_layers": [0], "inject_layers": [0],
                           "dataset_fingerprint": fp})
    return files


def test_scoring_jobs_run_without_loading_torch(scoring_files: dict[str, Path], tmp_path: Path) -> None:
    files = scoring_files
    aqi = ["--bootstrap", "20", "--permutations", "5", "--pca-components", "4"]
    score = _run(RUN_COMMAND, "-q", "score", "--activations", str(files["hidden"]), "--prompts",
                 str(files["prompts"]), *aqi, "--out", str(tmp_path / "aqi.parquet"))
    assert _torch_modules(score) == []
    sweep = _run(RUN_COMMAND, "-q", "score-sweep", "--sweep", str(files["sweep"]), "--prompts",
                 str(files["prompts"]), *aqi, "--out", str(tmp_path / "sweep_aqi.parquet"))
    assert _torch_modules(sweep) == []
    # the jobs did their work: one overall row per layer (one axiom: its row is the overall's twin) and,
    # in the sweep, the own vector's lambda-1 states separate the classes far more than lambda 0's
    table, _ = read_table(tmp_path / "aqi.parquet")
    assert sorted(table["category"]) == ["A", "overall"]
    swept, _ = read_table(tmp_path / "sweep_aqi.parquet")
    own = swept[(swept["vector"] == "own") & (swept["category"] == "overall")].set_index("lam")["aqi"]
    assert own[1.0] > own[0.0] + 10


def test_the_parser_and_the_config_check_load_no_torch(repo_root: Path) -> None:
    assert _torch_modules(_run(RUN_COMMAND, "score", "--help")) == []
    check = _run(RUN_COMMAND, "check-config", str(repo_root / "config" / "config.yaml"))
    assert _torch_modules(check) == []


def test_planning_the_embedded_default_loads_no_torch(tmp_path: Path) -> None:
    """``snakemake -n`` on a copy of the workflow: the Snakefile's config check and every rule's
    ``code()`` run in Snakemake's process, which must not load torch."""
    from snakemake_run import make_workdir

    work = make_workdir(tmp_path / "work")
    code = ("import atexit, json, sys\n"
            f"atexit.register(lambda: print('@@' + json.dumps([m for m in {TORCH!r} if m in sys.modules])))\n"
            "sys.argv = ['snakemake', '-n', '--quiet', 'rules']\nfrom snakemake.cli import main\nmain()\n")
    result = _run(code, cwd=work)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    marks = [line for line in result.stdout.splitlines() if line.startswith("@@")]
    assert marks and json.loads(marks[-1][2:]) == []
    assert "score_aqi" in result.stdout  # the plan was made: the dry run lists its rules


def test_imports_in_any_statement_are_code_inputs_with_the_caches(tmp_path: Path) -> None:
    """An import nested in a try handler, a finally, a with, a loop's else, a match case, a method
    or a nested function is followed; one under ``if TYPE_CHECKING:`` is not; the cached graph sees
    an edit made after it was computed."""
    root = tmp_path / "driftlib"
    shutil.copytree(SRC / "driftlib", root, ignore=shutil.ignore_patterns("__pycache__"))
    aqi = root / "stats" / "aqi.py"
    before = {p.relative_to(root).as_posix() for p in command_sources("score", root)}
    added = {"steer/hooks.py", "steer/gguf.py", "model/tiny.py", "stats/equilibria.py", "stats/maps.py",
             "stats/drift.py", "core/profiles.py"}
    assert not added & before
    aqi.write_text(aqi.read_text(encoding="utf-8") + (
        "\n\ndef _nested(x):\n"
        "    try:\n        pass\n    except ValueError:\n        from driftlib.steer import hooks\n"
        "    finally:\n        import driftlib.steer.gguf\n"
        "    with open(x):\n        from driftlib.model import tiny\n"
        "    for _ in ():\n        pass\n    else:\n        from driftlib.stats import equilibria\n"
        "    match x:\n        case 1:\n            from driftlib.stats import maps\n"
        "    def inner():\n        from driftlib.stats import drift\n"
        "    class K:\n        def m(self):\n            from driftlib.core import profiles\n"
        "    return [lambda: 0 for _ in ()]\n"
    ), encoding="utf-8")
    after = {p.relative_to(root).as_posix() for p in command_sources("score", root)}
    assert added <= after
    assert "phases/game/solve.py" not in after
    aqi.write_text(aqi.read_text(encoding="utf-8") + (
        "\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from driftlib.phases.game import solve\n"
    ), encoding="utf-8")
    assert {p.relative_to(root).as_posix() for p in command_sources("score", root)} == after
    clear_caches()
    assert {p.relative_to(root).as_posix() for p in command_sources("score", root)} == after


@pytest.mark.parametrize("n,d,k", [(80, 16, 8), (120, 40, 32), (50, 200, 32)])
def test_the_exact_pca_is_sklearns_full_pca(n: int, d: int, k: int) -> None:
    """The AQI's exact PCA (computed without importing sklearn, which a scoring job would pay for at
    start-up) gives sklearn's ``PCA(svd_solver="full")`` scores, signs included."""
    from sklearn.decomposition import PCA

    from driftlib.stats.aqi import preprocess_features

    X = np.random.default_rng(n).standard_normal((n, d)) * np.linspace(0.5, 4.0, d) + 3.0
    Z = preprocess_features(X, n_components=None)
    expected = PCA(n_components=k, svd_solver="full").fit_transform(Z)
    np.testing.assert_allclose(preprocess_features(X, n_components=k), expected, rtol=1e-12, atol=1e-12)
