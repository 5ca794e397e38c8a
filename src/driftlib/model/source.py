"""Where a model comes from and how it is loaded, as one typed value (no torch at import).

The CLI folds ``--model``, ``--revision``, ``--dtype``, ``--device`` and ``--trust-remote-code``
into a :class:`ModelSource`; phase functions receive it and call :meth:`ModelSource.load`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ModelSource"]


@dataclass(frozen=True)
class ModelSource:
    """A model to load.

    Args:
        path: a hub id or a local model folder.
        revision: the hub revision (None: the default branch).
        dtype: ``auto``, ``float32``, ``bfloat16``, ``float16``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
        trust_remote_code: allow the repository's own model code.
    """

    path: str
    revision: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False

    def load(self) -> tuple[Any, Any]:
        """``(model, tokenizer)`` through :func:`driftlib.model.loading.load_model`."""
        from driftlib.model.loading import load_model

        return load_model(self.path, revision=self.revision, dtype=self.dtype, device=self.device,
                          trust_remote_code=self.trust_remote_code)
