"""The steering specification: one object that carries every steering option to every site that steers.

A :class:`SteeringSpec` is made once from the config's ``steering`` section (or from the CLI's
steering options, which the rules fill from that section) and handed, bound to a model's vectors,
to the lambda sweeps, the capability cost, the transfer and recovery sweeps, the phase-5 agents and
the GGUF export. A new steering option is a new field here, and reaches every one of them::

    spec = SteeringSpec.from_config(config["steering"])            # options only
    spec = spec.bind(vectors, depth=num_layers(model))              # {block: v} at the injection layers
    with steer(model, spec.with_lam(4.0)):
        ...

Numpy-only: importing it loads no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from driftlib.core.errors import ConfigError
from driftlib.core.layerspec import resolve_layers
from driftlib.stats.condition import Condition

__all__ = ["SteeringSpec", "as_spec"]


@dataclass(frozen=True)
class SteeringSpec:
    """How a model is steered.

    Args:
        layers: the injection layers as configured (block indices or relative depths,
            ``steering.layers``); :meth:`bind` resolves them for a model.
        operator: the steering operator's name (:data:`driftlib.steer.operators.OPERATORS`).
        preserve_norm: rescale each steered token to its norm before steering, so steering
            changes directions only.
        start_position: steer only positions ``>= start_position`` (absolute, counting padding and
            cached tokens; see :mod:`driftlib.steer.hooks`); None steers every position.
        lam: the strength λ.
        vectors: ``{block index: v [d]}`` (numpy or torch), or None before :meth:`bind`; checked
            against the model where the spec is applied (:func:`driftlib.steer.hooks.steer`).
        condition: for a gated operator (``conditional``), the
            :class:`~driftlib.stats.condition.Condition` that picks the prompts to steer (read at a
            block at or before the first injection block); None otherwise.
    """

    layers: tuple[int | float, ...] = (0.5,)
    operator: str = "add"
    preserve_norm: bool = False
    start_position: int | None = None
    lam: float = 1.0
    vectors: Mapping[int, np.ndarray] | None = field(default=None, compare=False)
    condition: Condition | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        from driftlib.steer.operators import operator_named

        operator_named(self.operator)  # a clear error for an unknown name
        lam = self.lam
        if isinstance(lam, bool) or not isinstance(lam, (int, float, np.floating, np.integer)) \
                or not math.isfinite(float(lam)):
            raise ConfigError(f"steering: lambda {lam!r}; use a finite number")
        object.__setattr__(self, "lam", float(lam))
        object.__setattr__(self, "layers", tuple(self.layers))
        sp = self.start_position
        if sp is not None and (isinstance(sp, bool) or not isinstance(sp, (int, np.integer)) or sp < 0):
            raise ConfigError(f"steering: start_position={sp!r}; use a non-negative integer or None")

    @classmethod
    def from_config(cls, steering: Mapping[str, Any]) -> SteeringSpec:
        """The options of the config's ``steering`` section (no vectors yet; λ 1)."""
        return cls(layers=tuple(steering["layers"]), operator=steering.get("operator", "add"),
                   preserve_norm=bool(steering.get("preserve_norm", False)))

    @property
    def steered(self) -> bool:
        """Whether applying this spec changes anything: it has vectors and a non-zero λ."""
        return bool(self.vectors) and self.lam != 0.0

    @property
    def blocks(self) -> list[int]:
        """The bound injection blocks, sorted (empty before :meth:`bind`)."""
        return sorted(self.vectors) if self.vectors else []

    @property
    def gated(self) -> bool:
        """Whether the operator acts only on the prompts the condition selects."""
        from driftlib.steer.operators import operator_named

        return operator_named(self.operator).gated

    @property
    def first_block(self) -> int:
        """The first block the spec reads or steers: the blocks below it run unsteered, so a sweep
        may compute them once for every lambda."""
        blocks = list(self.blocks)
        if self.gated and self.condition is not None:
            blocks.append(int(self.condition.layer))
        return min(blocks)

    def with_condition(self, condition: Condition | None) -> SteeringSpec:
        """The same spec gated by ``condition``."""
        return replace(self, condition=condition)

    def operator_keys(self, compare: Any) -> list[str | None]:
        """The keys of :meth:`for_operators`: None (this spec's operator), then each other operator of
        ``compare`` once, in order."""
        return [None, *[op for op in dict.fromkeys(compare) if op != self.operator]]

    def for_operators(self, compare: Any, condition: Condition | None = None) -> dict[str | None, SteeringSpec]:
        """The spec of each operator a sweep steers under, side by side.

        Args:
            compare: operator names (``steering.compare``); the main operator and repeats are skipped.
            condition: the condition a gated operator (``conditional``) is gated by.

        Returns:
            ``{None: this spec (gated by ``condition`` if its operator is gated), op: the same spec
            under each other operator of ``compare``, in order}``.

        Raises:
            ConfigError: a gated operator is asked for without a condition.
        """
        specs: dict[str | None, SteeringSpec] = {None: replace(self, condition=condition if self.gated else None)}
        for op in self.operator_keys(compare)[1:]:
            spec = replace(self, operator=op, condition=None)
            if spec.gated:
                if condition is None:
                    raise ConfigError(f"steering.compare: the {op!r} operator needs a condition (a fit-condition "
                                      "file: give --condition)")
                spec = spec.with_condition(condition)
            specs[op] = spec
        return specs

    def with_lam(self, lam: float) -> SteeringSpec:
        """The same spec at strength ``lam``."""
        return replace(self, lam=lam)

    def with_vectors(self, vectors: Mapping[int, Any]) -> SteeringSpec:
        """The same options with other vectors (``{block: v [d]}``, taken as given: a mapped or a
        random vector at the same blocks)."""
        return replace(self, vectors=dict(vectors))

    def bind(self, vectors: Mapping[int, Any], depth: int, *, what: str = "the vectors") -> SteeringSpec:
        """The spec with ``vectors`` taken at its injection layers, resolved for a model of ``depth`` blocks.

        Args:
            vectors: ``{block: v [d]}`` at (at least) every injection block.
            depth: the model's number of decoder blocks.
            what: names the vectors in the error.

        Raises:
            ConfigError: a layer out of range, or no vector at an injection block.
        """
        inject = resolve_layers(list(self.layers), depth, key="steering.layers")
        missing = [layer for layer in inject if layer not in vectors]
        if missing:
            raise ConfigError(f"{what}: no vector at injection layers {missing}. Re-run compute_vectors.")
        return self.with_vectors({layer: vectors[layer] for layer in inject})

    def metadata(self) -> dict[str, Any]:
        """The options as recorded in artifacts' metadata (vectors and λ are recorded by the caller)."""
        out = {"operator": self.operator, "preserve_norm": self.preserve_norm,
               "inject_spec": list(self.layers), "start_position": self.start_position}
        if self.condition is not None:
            out.update(condition_layer=self.condition.layer, condition_threshold=self.condition.threshold)
        return out

    @property
    def additive(self) -> bool:
        """Whether the operator adds a constant (what a llama.cpp control vector can express)."""
        from driftlib.steer.operators import operator_named

        return operator_named(self.operator).additive and not self.preserve_norm


def as_spec(steering: SteeringSpec | Mapping[int, Any], lam: float | None = None) -> SteeringSpec:
    """``steering`` as a spec: a spec as it is, or ``{block: v}`` with the default options.

    Args:
        steering: a :class:`SteeringSpec`, or a mapping ``{block: v [d]}``.
        lam: the strength, if given (else the spec's, 1 for a mapping).
    """
    if isinstance(steering, SteeringSpec):
        spec = steering
    elif isinstance(steering, Mapping):
        if not steering:
            raise ConfigError("steer: give at least one {layer: vector} pair")
        spec = SteeringSpec(layers=tuple(k for k in steering if isinstance(k, (int, float))), vectors=dict(steering))
    else:
        raise ConfigError(f"steer: give a SteeringSpec or a {{layer: vector}} mapping, not {type(steering).__name__}")
    return spec if lam is None else spec.with_lam(lam)
