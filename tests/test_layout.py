"""The package layout: no module uses another module's private names, the layers import only
what they may, and config checking loads no torch."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "driftlib"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(name: str) -> bool:
    return (SRC / name.replace(".", "/") / "__init__.py").is_file()


def private_uses(path: Path) -> list[str]:
    """``from driftlib.x import _y``, ``import driftlib.x as m; m._y`` and ``from driftlib.p import m; m._y``
    where ``driftlib.x`` is not the module itself (dunder names are not private)."""
    me = module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("driftlib"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if is_package(node.module) and (SRC / full.replace(".", "/")).with_suffix(".py").is_file() \
                        or is_package(full):
                    aliases[alias.asname or alias.name] = full  # a module imported by name
                elif alias.name.startswith("_") and not alias.name.startswith("__") and node.module != me:
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("driftlib.") and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__") and aliases[node.value.id] != me):
            found.append(f"line {node.lineno}: {aliases[node.value.id]}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names() -> None:
    offences = {module_name(p): private_uses(p) for p in sorted(PKG.rglob("*.py"))}
    offences = {k: v for k, v in offences.items() if v}
    assert offences == {}


def test_the_private_name_check_sees_a_private_import(tmp_path: Path) -> None:
    bad = PKG / "stats" / "_layout_probe.py"
    bad.write_text("from driftlib.stats.aqi import _probe_name\nfrom driftlib.stats import aqi as A\nA._x\n")
    try:
        assert private_uses(bad) == ["line 1: from driftlib.stats.aqi import _probe_name",
                                     "line 3: driftlib.stats.aqi._x"]
    finally:
        bad.unlink()


# --------------------------------------------------------------------------------------------
# what each layer may import

#: layer -> the layers its modules may import (its own always); phases import no other phase
ALLOWED = {
    "core": {"core"},
    "datasets": {"core", "datasets"},
    "stats": {"core", "stats"},
    "model": {"core", "datasets", "model"},
    "steer": {"core", "datasets", "stats", "model", "steer"},
    "phases": {"core", "datasets", "stats", "model", "steer"},
}
#: reads of torch-free tables across a layer: the config check needs the families the workflow knows
EXCEPTIONS = {("driftlib.core.config", "driftlib.model.families"), ("driftlib.core.config", "driftlib.model.real")}


def imports_of(path: Path) -> set[str]:
    """Every driftlib module a file imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("driftlib."):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("driftlib."))
    return out


def test_each_layer_imports_only_the_layers_below_it() -> None:
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        me = module_name(path)
        parts = me.split(".")
        if len(parts) < 3 or parts[1] not in ALLOWED:
            continue  # driftlib/__init__.py and the CLI (the top: it may import anything)
        layer = parts[1]
        for other in imports_of(path):
            o = other.split(".")
            if (me, other) in EXCEPTIONS:
                continue
            if layer == "phases" and o[1] == "phases" and o[2] != parts[2]:
                bad.append(f"{me} imports another phase's module {other} (read its output files instead)")
            elif o[1] != layer and o[1] not in ALLOWED[layer]:
                bad.append(f"{me} imports {other}")
    assert bad == []


def test_numpy_only_layers_import_no_torch() -> None:
    heavy = {"torch", "transformers", "peft"}
    for path in sorted(list((PKG / "stats").rglob("*.py")) + list((PKG / "core").rglob("*.py"))):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & heavy, f"{module_name(path)} imports {names & heavy}"


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(SRC)})


def test_config_check_and_numpy_commands_load_no_torch(repo_root: Path) -> None:
    code = (
        "import sys\n"
        "from driftlib.core.config import load_config\n"
        f"load_config({str(repo_root / 'config' / 'config.yaml')!r})\n"
        "from driftlib.cli import build_parser\n"
        "build_parser()\n"
        "import driftlib.phases.baseline.scoring, driftlib.phases.same_arch.evaluate\n"
        "import driftlib.phases.cross_arch.evaluate, driftlib.phases.recovery.evaluate\n"
        "import driftlib.phases.collaboration.evaluate, driftlib.phases.game.solve\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    result = _fresh_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_schema_ships_with_the_package_and_the_workflow_links_it(repo_root: Path) -> None:
    from driftlib.core.config import SCHEMA_PATH

    assert SCHEMA_PATH.is_file() and SCHEMA_PATH.is_relative_to(PKG)
    assert (repo_root / "workflow" / "schemas" / "config.schema.yaml").resolve() == SCHEMA_PATH.resolve()
    pyproject = (repo_root / "pyproject.toml").read_text(encoding="utf-8")
    assert "core/config.schema.yaml" in pyproject


# --------------------------------------------------------------------------------------------
# the CLI only maps arguments


def test_every_command_maps_its_arguments_to_one_phase_function() -> None:
    from driftlib.cli import commands
    from driftlib.cli.codegraph import command_entry

    entries = {name: command_entry(name) for name in commands()}
    assert len(entries) >= 30
    assert all(module.startswith(("driftlib.phases.", "driftlib.core.config")) for module, _ in entries.values()), entries


def test_no_cli_function_is_long() -> None:
    long = []
    for path in sorted((PKG / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 40:
                long.append(f"{module_name(path)}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert long == []
