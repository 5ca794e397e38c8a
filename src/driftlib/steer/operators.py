"""Steering operators: what a steered decoder block does to its output hidden states.

An operator is a pair of plain functions registered in :data:`OPERATORS` under its name (the
name the config's ``steering.operator`` and :class:`~driftlib.steer.spec.SteeringSpec` use):

- ``prepare(vector, lam) -> {name: tensor}``: the float32 tensors the operator needs at one layer,
  computed once per steering context from the layer's vector ``v [d]`` (float32) and ``λ``;
- ``apply(hidden, prepared) -> hidden``: the steered hidden states ``[b, t, d]`` of one block
  output, with the prepared tensors already cast to the hidden states' dtype and device.

Importing this module loads no torch (the config check and the CLI name operators without it).
``apply`` acts on every position independently (the hook selects positions and preserves norms
around it), so a lambda sweep may reuse the unsteered prefix below the first injection block.

To add an operator: write its two functions here, register them in :data:`OPERATORS`, add its name
to the ``steering.operator`` enum of ``core/config.schema.yaml``, and test it in
``tests/test_operators.py`` (``docs/architecture.md`` has the recipe).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the operators only do arithmetic on the tensors they are given
    import torch

__all__ = ["OPERATORS", "Operator", "operator_named"]


@dataclass(frozen=True)
class Operator:
    """A steering operator: ``prepare`` once per layer, ``apply`` on every steered block output.

    Args:
        name: the name in the config and in tables.
        prepare: ``(v [d] float32, lam) -> {name: float32 tensor}``.
        apply: ``(hidden [b, t, d], prepared) -> steered hidden [b, t, d]`` (a new tensor).
        additive: whether the operator is ``h + c`` for a constant ``c`` (llama.cpp control vectors
            can express only those).
        gated: whether it acts only on the prompts its spec's condition selects (per sequence,
            decided on the prompt; see :mod:`driftlib.steer.hooks`).
    """

    name: str
    prepare: Callable[[torch.Tensor, float], dict[str, torch.Tensor]]
    apply: Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]
    additive: bool
    gated: bool = False


def _unit(vector: torch.Tensor) -> torch.Tensor:
    norm = float(vector.norm())
    if not norm > 0:
        from driftlib.core.errors import ConfigError

        raise ConfigError("steering: ablation needs a non-zero vector (its direction is removed)")
    return vector / norm


def _add_prepare(vector: torch.Tensor, lam: float) -> dict[str, torch.Tensor]:
    return {"delta": lam * vector}


def _add_apply(hidden: torch.Tensor, prepared: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return hidden + prepared["delta"]


def _ablate_prepare(vector: torch.Tensor, lam: float) -> dict[str, torch.Tensor]:
    return {"r": _unit(vector), "lam": vector.new_tensor(lam)}


def _ablate_apply(hidden: torch.Tensor, prepared: Mapping[str, torch.Tensor]) -> torch.Tensor:
    r = prepared["r"]
    return hidden - prepared["lam"] * (hidden * r).sum(dim=-1, keepdim=True) * r


def _ablate_add_prepare(vector: torch.Tensor, lam: float) -> dict[str, torch.Tensor]:
    return {**_ablate_prepare(vector, lam), **_add_prepare(vector, lam)}


def _ablate_add_apply(hidden: torch.Tensor, prepared: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return _ablate_apply(hidden, prepared) + prepared["delta"]


#: every operator by name
OPERATORS: dict[str, Operator] = {
    # h <- h + λ·v
    "add": Operator("add", _add_prepare, _add_apply, additive=True),
    # h <- h − λ (h·r̂) r̂ with r̂ = v/‖v‖: λ = 1 removes the component along v (Arditi et al. 2024)
    "ablate": Operator("ablate", _ablate_prepare, _ablate_apply, additive=False),
    # ablate, then add: h <- h − λ (h·r̂) r̂ + λ·v (λ = 0 is the unsteered model, as for every operator)
    "ablate_add": Operator("ablate_add", _ablate_add_prepare, _ablate_add_apply, additive=False),
    # h <- h + λ·v only for prompts whose condition score passes the threshold (CAST, Lee et al.
    # 2024); the gate is the spec's condition (driftlib.steer.spec.SteeringSpec.condition)
    "conditional": Operator("conditional", _add_prepare, _add_apply, additive=False, gated=True),
}


def operator_named(name: str) -> Operator:
    """The operator registered as ``name``.

    Raises:
        ConfigError: no such operator; the message lists the known ones.
    """
    from driftlib.core.errors import ConfigError

    try:
        return OPERATORS[name]
    except KeyError:
        raise ConfigError(f"steering.operator: {name!r} is not a steering operator; use one of "
                          f"{', '.join(sorted(OPERATORS))}") from None
