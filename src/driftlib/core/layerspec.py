"""Layer settings: a block index, a relative depth, or a list of them, turned into block indices.

Torch-free, so that checking a config needs no model library. Every phase means the same thing by
"layer ``l``": the output of decoder block ``l`` (0-based); :mod:`driftlib.model.layers` finds the
blocks of a loaded model.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from driftlib.core.errors import ConfigError

LayerSpec = int | float | Sequence[int | float]


def _resolve_one(value: object, n_layers: int, key: str) -> int:
    depth = f"the model has {n_layers} decoder blocks (valid: 0..{n_layers - 1}, -{n_layers}..-1, or a float in (0, 1])"
    # bool is an int subclass; True/False as a layer is always a config mistake
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{key}: {value!r} is not a layer; {depth}")
    if isinstance(value, numbers.Integral):
        index = int(value)
        if not -n_layers <= index < n_layers:
            raise ConfigError(f"{key}: layer {index} is out of range; {depth}")
        return index % n_layers
    frac = float(value)
    if not math.isfinite(frac) or not 0.0 < frac <= 1.0:
        raise ConfigError(
            f"{key}: {value!r} is a float, so it is read as a relative depth, which must lie in (0, 1]; "
            f"{depth}. Write block indices as integers."
        )
    # Python's round (half to even), as the design states: 0.5 of 30 blocks -> block 14
    return max(0, round(frac * n_layers) - 1)


def resolve_layers(spec: LayerSpec, n_layers: int, *, key: str = "layers") -> list[int]:
    """Turn a layer setting into sorted, unique 0-based block indices.

    Args:
        spec: one value or a sequence of values. An ``int`` is a block index (negative counts from
            the end: ``-1`` is the last block). A ``float`` in ``(0, 1]`` is a relative depth and maps
            to block ``max(0, round(f * n_layers) - 1)`` (so ``1.0`` is the last block, ``0.5`` of 30
            blocks is block 14).
        n_layers: the model's number of decoder blocks.
        key: the config key the setting came from, named in errors.

    Returns:
        Sorted unique indices in ``[0, n_layers)``.

    Raises:
        ConfigError: an empty setting, a value that is not a number, an index out of range or a
            relative depth outside ``(0, 1]``; the message names ``key``, the value and the depth.
    """
    if n_layers < 1:
        raise ConfigError(f"{key}: the model reports {n_layers} decoder blocks; cannot pick layers")
    if isinstance(spec, (str, bytes)):
        raise ConfigError(
            f"{key}: {spec!r} is not a layer; give an integer block index, a float depth in (0, 1], "
            f"or a list of them (the model has {n_layers} decoder blocks)"
        )
    if isinstance(spec, numbers.Real) or not hasattr(spec, "__iter__"):
        values: list[object] = [spec]
    else:
        values = list(spec)  # a list, tuple, numpy array, …
    if not values:
        raise ConfigError(f"{key}: no layers given; the model has {n_layers} decoder blocks")
    return sorted({_resolve_one(v, n_layers, key) for v in values})
