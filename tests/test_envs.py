"""The conda environment and pyproject's dependencies list the same packages and bounds."""

from __future__ import annotations

import re
import tomllib

import yaml

#: conda package names that differ from their PyPI names
CONDA_TO_PYPI = {"matplotlib-base": "matplotlib"}


def _parse(spec: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$", spec)
    return m.group(1).lower(), m.group(3).replace(" ", "")


def test_conda_env_matches_pyproject(repo_root):
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    wanted = dict(_parse(s) for s in project["dependencies"])
    env = yaml.safe_load((repo_root / "workflow/envs/driftlib.yaml").read_text())
    listed = {}
    for dep in env["dependencies"]:
        specs = dep["pip"] if isinstance(dep, dict) else [dep]
        for spec in specs:
            name, bound = _parse(spec.replace("=", "==", 1) if re.match(r"^[\w.-]+=[^=]", spec) else spec)
            listed[CONDA_TO_PYPI.get(name, name)] = bound
    for name in ("python", "pip"):
        listed.pop(name, None)
    assert listed == wanted
