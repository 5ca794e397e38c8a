"""Finding a model's decoder blocks and turning a layer setting into block indices.

Every phase of the workflow means the same thing by "layer ``l``": the output of decoder block ``l``
(0-based), read through a forward hook on that block. That is *not* ``output_hidden_states[l]``:
``hidden_states[0]`` is the embedding output, ``hidden_states[l + 1]`` is block ``l``'s output for every
block but the last, and in current transformers ``hidden_states[-1]`` is taken *after* the final norm.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence

import torch

from driftlib.errors import ConfigError, ModelError

logger = logging.getLogger(__name__)

#: Attribute paths tried, in order, to find the decoder blocks.
LAYER_PATHS: tuple[str, ...] = (
    "model.layers",  # Llama, Mistral, Qwen2, Phi-3, Gemma-2 (…ForCausalLM)
    "transformer.h",  # GPT-2, Falcon
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT and other encoder-decoder-style naming
    "layers",  # a bare base model (LlamaModel, …)
)

LayerSpec = int | float | Sequence[int | float]


def _get_path(obj: object, path: str) -> object | None:
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def find_decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """Return the model's decoder blocks (a ``ModuleList`` of ``n_layers`` blocks, in depth order).

    Tries every path of :data:`LAYER_PATHS` in order and returns the first that is a non-empty
    ``torch.nn.ModuleList``.

    Raises:
        ModelError: no path matched; the message lists every path tried and the model class.
    """
    for path in LAYER_PATHS:
        found = _get_path(model, path)
        if isinstance(found, torch.nn.ModuleList) and len(found) > 0:
            logger.debug("decoder blocks of %s found at %s", type(model).__name__, path)
            return found
    raise ModelError(
        f"cannot find the decoder blocks of {type(model).__name__}: tried the attribute paths "
        f"{', '.join(repr(p) for p in LAYER_PATHS)} and none is a non-empty torch.nn.ModuleList. "
        "This architecture is not supported yet; add its block path to driftlib.layers.LAYER_PATHS."
    )


def num_layers(model: torch.nn.Module) -> int:
    """Number of decoder blocks of ``model`` (found with :func:`find_decoder_layers`)."""
    return len(find_decoder_layers(model))


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
