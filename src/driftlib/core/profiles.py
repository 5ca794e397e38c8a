"""Names of collaboration pairings and posture profiles, as they appear in result paths.

Phase 5 runs a *pairing* (two or more agents from the config, in turn order) under a *profile*:
one steering strength ``lambda`` per agent, each on the agent's own alignment vector (``0`` = not
steered). Phase 6 treats each agent's lambda as its posture. Both phases name these in paths:

- pairing: the agent names joined by ``+`` (``llama+qwen2``);
- profile: the lambdas, each in Python's shortest ``g`` form, joined by ``x`` (``0x1``,
  ``0.5x-0.25``); a run under a compared steering operator (``steering.compare``) adds ``@`` and
  the operator (``1x1@ablate``), a run under the main operator adds nothing.

No torch here: the numerical phase-6 code imports this module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from driftlib.core.errors import ConfigError

__all__ = ["pairing_name", "parse_pairing", "profile_name", "parse_profile", "profile_operator"]

PAIRING_SEP = "+"
PROFILE_SEP = "x"
OPERATOR_SEP = "@"
_OPERATOR = re.compile(r"[a-z_]+")


def pairing_name(agents: Sequence[str]) -> str:
    """``["llama", "qwen2"]`` -> ``"llama+qwen2"`` (turn order kept)."""
    agents = [str(a) for a in agents]
    if len(agents) < 2:
        raise ConfigError(f"a pairing needs at least two agents; got {agents}")
    if len(set(agents)) != len(agents):
        raise ConfigError(f"a pairing names an agent twice: {agents}")
    for a in agents:
        if not a or PAIRING_SEP in a or "/" in a:
            raise ConfigError(f"agent name {a!r} cannot be used in a pairing (empty, or holds '+' or '/')")
    return PAIRING_SEP.join(agents)


def parse_pairing(name: str) -> list[str]:
    """Inverse of :func:`pairing_name`."""
    return pairing_name(str(name).split(PAIRING_SEP)).split(PAIRING_SEP)


def _lam(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ConfigError(f"a profile's lambda must be a finite number; got {value!r}")
    return float(value) + 0.0  # -0.0 -> 0.0


def _operator(value: object) -> str:
    if not isinstance(value, str) or not _OPERATOR.fullmatch(value):
        raise ConfigError(f"a profile's operator must be a steering operator's name; got {value!r}")
    return value


def profile_name(lambdas: Sequence[float], operator: str | None = None) -> str:
    """``[0, 1.0]`` -> ``"0x1"``; ``[0.5, -0.25]`` -> ``"0.5x-0.25"`` (one lambda per agent);
    with ``operator`` (a compared operator), ``[1, 1], "ablate"`` -> ``"1x1@ablate"``."""
    lams = [_lam(v) for v in lambdas]
    if not lams:
        raise ConfigError("a profile needs one lambda per agent; got none")
    name = PROFILE_SEP.join(f"{v:g}" for v in lams)
    return name if operator is None else f"{name}{OPERATOR_SEP}{_operator(operator)}"


def profile_operator(name: str) -> str | None:
    """The compared operator a profile runs under (``"1x1@ablate"`` -> ``"ablate"``), or None (the main one)."""
    _, sep, op = str(name).partition(OPERATOR_SEP)
    return _operator(op) if sep else None


def parse_profile(name: str, n_agents: int | None = None) -> list[float]:
    """Inverse of :func:`profile_name` (the lambdas; :func:`profile_operator` gives the operator);
    checks the number of lambdas when ``n_agents`` is given."""
    lams_part = str(name).partition(OPERATOR_SEP)[0]
    try:
        lams = [float(part) for part in lams_part.split(PROFILE_SEP)]
    except ValueError:
        raise ConfigError(f"profile {name!r}: expected lambdas joined by {PROFILE_SEP!r}, e.g. '0x1'") from None
    lams = [_lam(v) for v in lams]
    if n_agents is not None and len(lams) != n_agents:
        raise ConfigError(f"profile {name!r} has {len(lams)} lambda(s) for {n_agents} agents")
    return lams
