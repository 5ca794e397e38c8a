"""Neutral texts: what the capability cost of steering is measured on (next-token KL) and the short
prompts greedy generation starts from (repetition)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from driftlib.core.errors import DataError

__all__ = ["neutral_texts"]


def neutral_texts(source: str, n_texts: int, n_prompts: int) -> tuple[list[str], list[str]]:
    """The first ``n_texts`` neutral texts, and ``n_prompts`` short prompts (the first 8 words of
    the last ``n_prompts`` texts).

    Args:
        source: ``bundled`` (driftlib's ``data/neutral.txt``), or a text file with one text per line.
        n_texts: texts for the KL.
        n_prompts: prompts for greedy generation.
    """
    path = resources.files("driftlib") / "data" / "neutral.txt" if source == "bundled" else Path(source)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"steering.cost.neutral: cannot read {source!r} ({exc})") from None
    neutral = [line.strip() for line in lines if line.strip()]
    if not neutral:
        raise DataError(f"steering.cost.neutral: {source!r} holds no text")
    return neutral[:n_texts], [" ".join(t.split()[:8]) for t in neutral[-n_prompts:]]
