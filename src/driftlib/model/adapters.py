"""A LoRA adapter merged into a loaded model (phase 5's dealigned agents).

Phase 4.5 (:mod:`driftlib.phases.recovery.dealign`) trains dealignment adapters and saves them in
peft's own format (``results/dealign/<model>/adapters/steps<N>/``); phase 5 reads them through
:func:`merge_lora`, since a phase does not import another phase's code. The merged model is a plain
transformers model (``merge_and_unload``), so hooks, layers and generation are those of the model
the adapter was trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from driftlib.core.errors import ArtifactError

__all__ = ["merge_lora"]

ADAPTER_CONFIG = "adapter_config.json"


def merge_lora(model: Any, adapter_dir: str | Path) -> Any:
    """``model`` with the LoRA adapter of ``adapter_dir`` merged into its weights (in eval mode).

    Args:
        model: a loaded causal LM (the adapter's base model).
        adapter_dir: a peft adapter folder (``adapter_config.json`` and the weights).

    Raises:
        ArtifactError: the folder is missing, is not a LoRA adapter folder, or does not fit the model
            (the message names the folder and the rule that writes it, ``train_dealign``).
    """
    import json

    import peft

    path = Path(adapter_dir)

    def error(what: str) -> ArtifactError:
        return ArtifactError(f"{path}: {what}. Re-run the rule `train_dealign` to (re)write the dealignment adapters.")

    if not (path / ADAPTER_CONFIG).is_file():
        raise error("no such adapter folder" if not path.is_dir() else f"not a peft adapter folder (no {ADAPTER_CONFIG})")
    try:
        kind = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("peft_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise error(f"{ADAPTER_CONFIG} is not a readable JSON object ({exc})") from exc
    if kind != "LORA":
        raise error(f"{ADAPTER_CONFIG} does not describe a LoRA adapter (peft_type {kind!r})")
    try:
        wrapped = peft.PeftModel.from_pretrained(model, str(path))
    except Exception as exc:  # ValueError (modules not found), RuntimeError (shape mismatch), OSError, ...
        detail = " ".join(str(exc).split())[:300]
        raise error(f"the adapter does not load onto the model ({type(exc).__name__}: {detail})") from exc
    merged = wrapped.merge_and_unload()
    merged.eval()
    return merged
