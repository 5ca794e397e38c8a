"""Anchor texts: what two models both read so that their hidden states can be paired (phase 4).

Cross-architecture maps are fitted on pooled representations of the same texts in both models
(one vector per text, so different tokenizers do not matter). The anchors must not include the
evaluation prompts: a map fitted on the texts it is later judged on would leak. The bundled set
(``driftlib/data/anchors.txt``, 240 everyday sentences written for this project) shares no text
with the bundled prompts; for any other source, anchors that are also evaluation prompts (compared
after lower-casing and collapsing whitespace) are dropped, counted in the log and in the table's
metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from driftlib.core.errors import DataError
from driftlib.datasets.prompts import bundled_path, decode_lines, read_bytes

logger = logging.getLogger(__name__)

#: fewer anchors than this cannot support a cross-validated map
MIN_ANCHORS = 10


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def load_anchor_texts(source: str = "bundled") -> tuple[list[str], str]:
    """The anchor texts of ``source`` (``"bundled"`` or a UTF-8 text file, one text per line).

    Blank lines are skipped; a repeated text is an error naming its lines (a duplicate anchor
    would count twice in every fit). Returns ``(texts, display name)``.
    """
    if source == "bundled":
        data, name = bundled_path("anchors.txt")
    else:
        path = Path(source)
        data, name = read_bytes(path), str(path)
    texts, seen = [], {}
    for lineno, line in enumerate(decode_lines(data, name), start=1):
        text = line.strip()
        if not text:
            continue
        key = _normalise(text)
        if key in seen:
            raise DataError(f"{name}, line {lineno}: repeats the anchor text of line {seen[key]}")
        seen[key] = lineno
        texts.append(text)
    if len(texts) < MIN_ANCHORS:
        raise DataError(f"{name}: {len(texts)} anchor texts; at least {MIN_ANCHORS} are needed to fit and "
                        "cross-validate a map (a few hundred is better)")
    return texts, name


def prepare_anchors(texts: Iterable[str], prompts: Iterable[str], *, n: int | None = None,
                    seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Drop anchors that are evaluation prompts, then keep ``n`` of them (seeded; all when None).

    Returns a table ``[id, text]`` (ids ``anchor-0000``… in source order) and a report
    ``{"n_source", "n_dropped_overlap", "n"}``.
    """
    texts = list(texts)
    taken = {_normalise(p) for p in prompts}
    kept = [t for t in texts if _normalise(t) not in taken]
    dropped = len(texts) - len(kept)
    if dropped:
        logger.warning("dropped %d anchor texts that are also evaluation prompts", dropped)
    if n is not None and n < len(kept):
        order = np.sort(np.random.default_rng(seed).choice(len(kept), size=n, replace=False))
        kept = [kept[i] for i in order]
    if len(kept) < MIN_ANCHORS:
        raise DataError(f"{len(kept)} anchor texts remain after dropping {dropped} that are evaluation "
                        f"prompts; at least {MIN_ANCHORS} are needed")
    table = pd.DataFrame({"id": [f"anchor-{i:04d}" for i in range(len(kept))], "text": kept})
    return table, {"n_source": len(texts), "n_dropped_overlap": dropped, "n": len(kept)}


__all__ = ["MIN_ANCHORS", "load_anchor_texts", "prepare_anchors"]
