"""Finding a model's decoder blocks (layer settings become block indices in :mod:`driftlib.core.layerspec`).

Every phase of the workflow means the same thing by "layer ``l``": the output of decoder block ``l``
(0-based), read through a forward hook on that block. That is *not* ``output_hidden_states[l]``:
``hidden_states[0]`` is the embedding output, ``hidden_states[l + 1]`` is block ``l``'s output for every
block but the last, and in current transformers ``hidden_states[-1]`` is taken *after* the final norm.
"""

from __future__ import annotations

import logging

import torch

from driftlib.core.errors import ModelError
from driftlib.model.families import LAYER_PATHS

logger = logging.getLogger(__name__)



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
        "This architecture is not supported yet; add its block path to driftlib.model.families.LAYER_PATHS."
    )


def num_layers(model: torch.nn.Module) -> int:
    """Number of decoder blocks of ``model`` (found with :func:`find_decoder_layers`)."""
    return len(find_decoder_layers(model))


def hidden_size(model: torch.nn.Module) -> int | None:
    """The model's hidden size (``config.hidden_size``, else the input embeddings' width), None if unknown."""
    size = getattr(getattr(model, "config", None), "hidden_size", None)
    if isinstance(size, int):
        return size
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    dim = getattr(embeddings, "embedding_dim", None)
    return int(dim) if isinstance(dim, int) else None
