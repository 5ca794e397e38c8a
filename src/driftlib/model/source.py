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
        template: a hub id or local folder whose tokenizer's chat template renders prompts for this
            model (the model key's aligned variant, so that base and aligned read the same string);
            None: the model's own tokenizer.
    """

    path: str
    revision: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    template: str | None = None

    def load(self) -> tuple[Any, Any]:
        """``(model, tokenizer)`` through :func:`driftlib.model.loading.load_model`."""
        from driftlib.model.loading import load_model

        return load_model(self.path, revision=self.revision, dtype=self.dtype, device=self.device,
                          trust_remote_code=self.trust_remote_code)

    def load_template(self) -> Any:
        """The tokenizer whose chat template renders prompts (None: use the model's own)."""
        if not self.template or self.template == self.path:
            return None
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.template, trust_remote_code=self.trust_remote_code)
