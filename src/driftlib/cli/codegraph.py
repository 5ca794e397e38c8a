"""The driftlib source files a command runs, from the import graph: a rule's code inputs.

Snakemake does not see edits to an imported library, so every rule lists the source files of the
code its command runs as inputs (``code(command)`` in ``workflow/rules/common.smk``); editing one
re-runs exactly the rules whose commands can reach it. The graph is read from the source (``ast``,
nothing is imported) and follows lazy imports too:

1. the command's function in ``driftlib.cli`` imports one phase function (``from
   driftlib.phases.x.run import f``): that function is the entry;
2. in the entry's module: the module-level imports, the imports inside the entry function, and
   those of every function or class of that module it refers to (transitively); and what the
   CLI helpers the command calls import (the typed values they build: a model source, a
   steering spec, cost options);
3. from there on, every driftlib module reached contributes *all* its imports, at module level and
   inside functions alike (which of its functions run is not followed).

Not listed (edit them, then use ``--forcerun``): ``driftlib/cli/`` (argument parsing only),
``core/errors.py`` (messages), package ``__init__.py`` files (docstrings; the top one holds the
version).

The results are kept on disk (``$XDG_CACHE_HOME/driftlib/codegraph-*.json``, else
``~/.cache/driftlib/``) while no ``.py`` file of the package changes size or modification time, so
a plan after the first parses nothing (``snakemake -n`` on the embedded default: 5.8 s for the
first plan, 3.7 s for later ones, ``benchmarks/bench_startup.py``). Delete the file to start over.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from driftlib.core.errors import ConfigError

__all__ = ["NOT_CODE_INPUTS", "clear_caches", "command_entry", "command_sources", "module_file"]

#: the package's folder
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: modules whose edits re-run nothing (see the module docstring)
NOT_CODE_INPUTS = ("driftlib.core.errors",)


def module_file(name: str, root: Path = PACKAGE_DIR) -> Path | None:
    """The source file of module ``name`` (``driftlib.a.b``), or None if it is not a driftlib module."""
    parts = name.split(".")
    if parts[0] != "driftlib":
        return None
    base = root.joinpath(*parts[1:])
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _tree(path: Path) -> ast.Module:
    stat = path.stat()
    return _parse(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=None)
def _parse(path: Path, mtime_ns: int, size: int) -> ast.Module:
    """The parsed file, cached while it is unchanged (a plan parses each module once)."""
    return ast.parse(path.read_text(encoding="utf-8"))


def _imported(node: ast.AST, root: Path) -> set[str]:
    """The driftlib modules one import statement names (``from pkg import module`` names the module)."""
    found: set[str] = set()
    if isinstance(node, ast.Import):
        found.update(a.name for a in node.names if a.name.startswith("driftlib"))
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("driftlib"):
        found.add(node.module)
        for alias in node.names:
            sub = f"{node.module}.{alias.name}"
            if module_file(sub, root) is not None:
                found.add(sub)
    return found


def _walk(node: ast.AST):
    """``ast.walk`` that skips ``if TYPE_CHECKING:`` blocks (imports for annotations only)."""
    todo = [node]
    while todo:
        current = todo.pop()
        if isinstance(current, ast.If) and "TYPE_CHECKING" in ast.unparse(current.test):
            todo.extend(current.orelse)
            continue
        yield current
        todo.extend(ast.iter_child_nodes(current))


#: the fields of a statement that hold statements (an import is a statement, so it is found in these)
STATEMENT_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")


def _statements(node: ast.AST):
    """The statements in ``node`` (itself included), at any depth, skipping ``if TYPE_CHECKING:``
    blocks as :func:`_walk` does; expressions are not entered (no import can be in one), which makes
    this much faster than walking every node."""
    todo = [node]
    while todo:
        current = todo.pop()
        if isinstance(current, ast.If) and "TYPE_CHECKING" in ast.unparse(current.test):
            todo.extend(current.orelse)
            continue
        yield current
        for field in STATEMENT_FIELDS:
            todo.extend(getattr(current, field, ()))


def _imports_in(nodes: list[ast.AST], root: Path) -> set[str]:
    out: set[str] = set()
    for node in nodes:
        for inner in _statements(node):
            if isinstance(inner, (ast.Import, ast.ImportFrom)):
                out |= _imported(inner, root)
    return out


def _module_imports(path: Path, root: Path) -> frozenset[str]:
    """Every driftlib module that the file at ``path`` imports, at module level or inside functions."""
    stat = path.stat()
    return _module_imports_of(path, stat.st_mtime_ns, stat.st_size, root)


@lru_cache(maxsize=None)
def _module_imports_of(path: Path, mtime_ns: int, size: int, root: Path) -> frozenset[str]:
    """Cached while the file is unchanged: a plan walks each module once, not once per rule."""
    return frozenset(_imports_in([_parse(path, mtime_ns, size)], root))


@lru_cache(maxsize=None)
def _commands() -> dict:
    """The CLI's commands, read once per process (building the parser for every rule's ``code()``
    made a third of ``snakemake -n``)."""
    from driftlib.cli import commands

    return commands()


def clear_caches() -> None:
    """Forget the per-process caches (the CLI's commands, parsed modules, their imports); the
    files' caches also renew themselves when a file changes."""
    _commands.cache_clear()
    _parse.cache_clear()
    _module_imports_of.cache_clear()


def _command_function(command: str, root: Path) -> tuple[Path, ast.FunctionDef | None, str]:
    runs = _commands()
    if command not in runs:
        raise ConfigError(f"code(): driftlib has no command {command!r}")
    run = runs[command]
    cli_file = module_file(run.__module__, root)
    if cli_file is None:
        raise ConfigError(f"code(): cannot find the source of {run.__module__}")
    func = next((n for n in _tree(cli_file).body if isinstance(n, ast.FunctionDef) and n.name == run.__name__), None)
    return cli_file, func, f"{run.__module__}.{run.__name__}"


def _argument_imports(cli_file: Path, func: ast.FunctionDef, root: Path) -> set[str]:
    """What the CLI helpers that the command calls import: the typed values they build from the
    arguments (a model source, a steering spec, cost options) are code the command runs."""
    tree = _tree(cli_file)
    local = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    imported = {alias.asname or alias.name: node.module for node in tree.body if isinstance(node, ast.ImportFrom)
                and node.module and node.module.startswith("driftlib.cli") for alias in node.names}
    found: set[str] = set()
    for name in {n.id for n in _walk(func) if isinstance(n, ast.Name)}:
        helper = local.get(name) if name != func.name else None
        if helper is None and name in imported:
            helper_tree = _tree(module_file(imported[name], root))
            helper = next((n for n in helper_tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)
        if helper is not None:
            found |= {m for m in _imports_in([helper], root) if not m.startswith("driftlib.cli")}
    return found


def command_entry(command: str, root: Path = PACKAGE_DIR) -> tuple[str, str]:
    """``(module, function)``: the phase function that ``driftlib <command>`` maps its arguments to."""
    cli_file, func, where = _command_function(command, root)
    entries = [(node.module, alias.name) for node in ast.walk(func) if isinstance(node, ast.ImportFrom)
               and node.module and node.module.startswith("driftlib.") and not node.module.startswith("driftlib.cli")
               for alias in node.names] if func is not None else []
    if len(entries) != 1:
        raise ConfigError(f"code(): the command {command!r} ({where}) must import exactly "
                          f"one driftlib function; it imports {entries}")
    return entries[0]


def _entry_imports(module: str, function: str, root: Path) -> set[str]:
    """Step 2 of the module docstring: what the entry function of ``module`` can import."""
    tree = _tree(module_file(module, root))
    top = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    if function not in top:
        raise ConfigError(f"code(): {module} has no function {function!r}")
    found = _imports_in([n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], root)
    todo, seen = [function], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        found |= _imports_in([top[name]], root)
        todo += [n.id for n in _walk(top[name]) if isinstance(n, ast.Name) and n.id in top and n.id not in seen]
    return found


def _fingerprint(root: Path) -> str:
    """A hash of the path, size and modification time of every ``.py`` file under ``root``."""
    digest = hashlib.sha256(str(root).encode())
    todo = [root]
    while todo:
        with os.scandir(todo.pop()) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_dir() and entry.name != "__pycache__":
                    todo.append(Path(entry.path))
                elif entry.name.endswith(".py"):
                    stat = entry.stat()
                    digest.update(f"{entry.path}\0{stat.st_mtime_ns}\0{stat.st_size}\n".encode())
    return digest.hexdigest()


def _cache_file(root: Path) -> Path | None:
    """Where the import graph's results for the package at ``root`` are kept between processes:
    ``$XDG_CACHE_HOME/driftlib/`` (``~/.cache/driftlib/`` without it; None without a home either)."""
    try:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except RuntimeError:  # no home directory to be found
        return None
    return base / "driftlib" / f"codegraph-{hashlib.sha256(str(root).encode()).hexdigest()[:16]}.json"


def _read_cache(path: Path, fingerprint: str) -> dict[str, list[str]]:
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(kept, dict) or kept.get("fingerprint") != fingerprint or not isinstance(kept.get("sources"), dict):
        return {}
    return kept["sources"]


def _write_cache(path: Path, fingerprint: str, sources: dict[str, list[str]]) -> None:
    """Best effort: a cache that cannot be written is only slower next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"fingerprint": fingerprint, "sources": sources}), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def command_sources(command: str, root: Path = PACKAGE_DIR) -> list[Path]:
    """The source files the command can run (see the module docstring), sorted.

    The results are kept on disk (:func:`_cache_file`) for as long as no ``.py`` file under
    ``root`` changes its size or modification time (:func:`_fingerprint`): planning the workflow
    then reads them instead of parsing the package again (0.5 s of every ``snakemake -n``).
    """
    path = _cache_file(root)
    if path is None:
        return _command_sources(command, root)
    fingerprint = _fingerprint(root)
    kept = _read_cache(path, fingerprint)
    if command in kept:
        return [root / name for name in kept[command]]
    files = _command_sources(command, root)
    kept[command] = [f.relative_to(root).as_posix() for f in files]
    _write_cache(path, fingerprint, kept)
    return files


def _command_sources(command: str, root: Path) -> list[Path]:
    """:func:`command_sources`, from the source."""
    module, function = command_entry(command, root)
    cli_file, func, _ = _command_function(command, root)
    todo = sorted(_entry_imports(module, function, root) | _argument_imports(cli_file, func, root))
    seen = {module}
    while todo:
        name = todo.pop()
        if name in seen or module_file(name, root) is None:
            continue
        seen.add(name)
        todo += sorted(_module_imports(module_file(name, root), root) - seen)
    files = {module_file(name, root) for name in seen if name not in NOT_CODE_INPUTS}
    return sorted(f for f in files if f.name != "__init__.py")
