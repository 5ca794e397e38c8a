"""Names of phase-5 agents: a model key, or a model key's dealigned model (no torch here).

An entry of ``collaboration.pairings`` names an agent:

- ``KEY`` (``qwen2``): the aligned model of the config entry ``KEY``;
- ``KEY@dealigned`` (``qwen2@dealigned``): that aligned model with phase 4.5's dealignment LoRA of the
  strongest configured strength (the largest of ``dealign.steps``) merged into its weights;
- ``KEY@dealigned<N>`` (``qwen2@dealigned20``): the same at strength ``N`` (one of ``dealign.steps``).

A dealigned agent steers with its key's own vector (phase 2's ``results/vectors/KEY.safetensors``),
like the aligned agent of that key. The name is used as written in paths and tables
(``llama+qwen2@dealigned``); :func:`parse_agent` resolves it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from driftlib.core.errors import ConfigError

__all__ = ["DEALIGNED_TAG", "AgentRef", "agent_key", "parse_agent"]

#: the suffix that names a dealigned agent (``KEY@dealigned`` or ``KEY@dealigned<N>``)
DEALIGNED_TAG = "@dealigned"
_NAME = re.compile(r"^(?P<key>[^@]+?)(?P<tag>@dealigned(?P<steps>[1-9][0-9]*)?)?$")


@dataclass(frozen=True)
class AgentRef:
    """One agent of a pairing.

    Args:
        name: the agent's name as written in the pairing (and in paths and tables).
        key: the config's model key whose aligned model the agent is.
        dealign_steps: the strength of the dealignment adapter merged into it (LoRA training steps of
            phase 4.5), or None for the aligned model itself.
    """

    name: str
    key: str
    dealign_steps: int | None = None

    @property
    def dealigned(self) -> bool:
        return self.dealign_steps is not None


def parse_agent(name: str, strengths: Sequence[int] = ()) -> AgentRef:
    """The agent named ``name`` (see the module docstring).

    Args:
        name: ``KEY``, ``KEY@dealigned`` or ``KEY@dealigned<N>``.
        strengths: the configured dealignment strengths (``dealign.steps``): ``KEY@dealigned`` takes
            the largest; ``KEY@dealigned<N>`` must name one of them.

    Raises:
        ConfigError: a name of another form, or a strength that phase 4.5 does not train.
    """
    m = _NAME.match(str(name))
    if m is None:
        raise ConfigError(f"agent {name!r}: use a model key, KEY{DEALIGNED_TAG} or KEY{DEALIGNED_TAG}<steps> "
                          f"(e.g. qwen2{DEALIGNED_TAG}60)")
    if not m.group("tag"):
        return AgentRef(str(name), m.group("key"), None)
    known = sorted(int(s) for s in strengths)
    if m.group("steps") is None:
        if not known:
            raise ConfigError(f"agent {name!r}: no dealignment strength is configured (dealign.steps)")
        return AgentRef(str(name), m.group("key"), known[-1])
    steps = int(m.group("steps"))
    if strengths and steps not in known:
        raise ConfigError(f"agent {name!r}: strength {steps} is not one of dealign.steps {known}")
    return AgentRef(str(name), m.group("key"), steps)


def agent_key(name: str) -> str:
    """The model key of an agent name (``qwen2@dealigned60`` -> ``qwen2``), without checking the strength."""
    return str(name).split("@", 1)[0]
