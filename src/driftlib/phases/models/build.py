"""``driftlib tiny-tokenizer``, ``tiny-model`` and ``materialize-real``."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["materialize_real", "tiny_model", "tiny_tokenizer"]


def tiny_tokenizer(*, vocab_size: int, seed: int, out: str | Path) -> None:
    """Train the tiny family's tokenizer on the bundled text."""
    from driftlib.model.tiny import train_tokenizer

    train_tokenizer(out, vocab_size=vocab_size, seed=seed)


def tiny_model(*, variant: str, arch: str | None, tokenizer: str | None, base: str | None, steps: int, seed: int,
               out: str | Path) -> None:
    """Train a tiny base model (``arch``, ``tokenizer``), or fine-tune its aligned variant (``base``)."""
    from driftlib.model import tiny

    if variant == "base":
        record = tiny.build_base(arch, tokenizer, out, steps=steps, seed=seed)
    else:
        record = tiny.build_aligned(base, out, steps=steps, seed=seed)
    log.info("built %s: final loss %.3f", out, record.get("final_loss", float("nan")))


def materialize_real(*, name: str, out: str | Path, work_dir: str | None) -> None:
    """Save a real model shipped as GGUF in a pip package as an ordinary model folder."""
    from driftlib.model.real import materialize

    materialize(name, out, work_dir=work_dir)
