"""Preference pairs in hh-rlhf form: loading, sampling and transcript parsing.

A pair is two transcripts, ``chosen`` and ``rejected``, written the hh-rlhf way::

    "\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nHuman: ...\\n\\nAssistant: ..."

In hh-rlhf the two transcripts of a pair share the whole conversation and differ only in the
last assistant answer (see :func:`shared_prefix_chars`), which is why texts built from them must
be truncated from the left, never from the right.

Documented behaviour of :func:`load_pairs`:

* a pair whose ``chosen`` or ``rejected`` is empty or whitespace-only is dropped and counted in
  ``dropped_empty``; a pair whose two texts are identical is dropped and counted in
  ``dropped_identical`` (a pair counts once: empty takes precedence); both counts are logged;
* anything else that is wrong with a line (malformed JSON, not an object, missing or non-string
  ``chosen``/``rejected``, bytes that are not UTF-8) raises :class:`~driftlib.core.errors.DataError`
  naming the file and the 1-based line (``row`` for hub data, ``record`` for a JSON array);
* a source with fewer than :data:`MIN_PAIRS` usable pairs raises
  :class:`~driftlib.core.errors.DataError` naming it and ``data.pairs.source``, and
  :func:`sample_pairs` refuses ``n = 1`` naming ``data.pairs.n``: phase 2 splits the pairs in two
  halves, which one pair cannot give;
* ids are ``pair{line:05d}`` with the 1-based line (row, record) number in the source, counted
  before anything is dropped; hub row ``i`` and line ``i`` of the same file downloaded give the
  same id. Extra keys are ignored; texts are kept exactly as written.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftlib.core.artifacts import fingerprint
from driftlib.core.errors import ConfigError, DataError
from driftlib.datasets.prompts import (
    HF_PREFIX,
    bundled_path,
    decode_lines,
    hub_records,
    json_array,
    json_lines,
    read_bytes,
    split_hub_source,
)

log = logging.getLogger(__name__)

#: columns of the frame returned by :func:`load_pairs`
PAIR_COLUMNS: tuple[str, ...] = ("id", "chosen", "rejected")
BUNDLED_PAIRS = "preference_pairs.jsonl"
#: the fewest pairs the workflow can use: phase 2 reports each vector's stability as the cosine
#: between the vectors of two disjoint halves of the pairs (steer.vectors.split_half_stability)
MIN_PAIRS = 2

#: an hh-rlhf turn marker: "Human:" or "Assistant:" at the start of the text or after a blank line
_TURN = re.compile(r"(?:\A|\n\n)(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def _pair_records(
    source: str | os.PathLike, data_dir: str | None, split: str
) -> tuple[list[tuple[int, str, dict[str, Any]]], str, str]:
    """Read a pair source into ``([(number, where, record)], display name, report source)``."""
    if isinstance(source, str) and source == "bundled":
        data, name = bundled_path(BUNDLED_PAIRS)
        lines = decode_lines(data, name)
        recs = [(n, f"line {n}", o) for n, o in json_lines(lines, name)]
        return recs, name, f"bundled:{BUNDLED_PAIRS}"
    if isinstance(source, str) and source.startswith(HF_PREFIX):
        dataset_id = split_hub_source(source)
        name = f"hf:{dataset_id}{f'/{data_dir}' if data_dir else ''}[{split}]"
        kwargs: dict[str, Any] = {"split": split}
        if data_dir:
            kwargs["data_dir"] = data_dir
        rows = hub_records(dataset_id, name, **kwargs)
        return [(i, f"row {i}", r) for i, r in enumerate(rows, start=1)], name, name

    path = Path(source)
    name = str(path)
    lower = path.name.lower()
    if not (lower.endswith(".jsonl") or lower.endswith(".jsonl.gz") or lower.endswith(".json")):
        raise DataError(
            f"{path}: unsupported preference file type (use .jsonl, .jsonl.gz, .json, "
            f"'bundled' or 'hf:Anthropic/hh-rlhf')"
        )
    lines = decode_lines(read_bytes(path), name)
    first = next((ln.lstrip() for ln in lines if ln.strip()), "")
    if lower.endswith(".json") and first.startswith("["):
        arr = json_array(lines, name)
        return [(i, f"record {i}", r) for i, r in enumerate(arr, start=1)], name, name
    return [(n, f"line {n}", o) for n, o in json_lines(lines, name)], name, name


def load_pairs(
    source: str | os.PathLike = "bundled", *, data_dir: str | None = None, split: str = "test"
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Load and validate preference pairs.

    Parameters
    ----------
    source:
        ``"bundled"`` (the sample shipped with driftlib), a local ``.jsonl``, ``.jsonl.gz`` or
        ``.json`` file (JSON lines, or a JSON array of objects), or ``"hf:<dataset id>"`` such as
        ``"hf:Anthropic/hh-rlhf"`` (loaded with ``datasets.load_dataset(id, data_dir=data_dir,
        split=split)``).
    data_dir:
        The hub sub-folder, e.g. ``"harmless-base"`` (hub only).
    split:
        The hub split (hub only).

    Returns
    -------
    ``(frame, report)``: the frame has the columns ``id, chosen, rejected`` in source order with a
    fresh index; the report is ``{"source", "rows_read", "dropped_identical", "dropped_empty",
    "fingerprint"}``.
    """
    records, name, report_source = _pair_records(source, data_dir, split)
    rows: list[tuple[str, str, str]] = []
    dropped_empty = dropped_identical = 0
    for number, where, rec in records:
        for key in ("chosen", "rejected"):
            if key not in rec:
                raise DataError(
                    f"{name}, {where}: missing key '{key}'; keys found: "
                    f"{', '.join(map(str, rec)) or '(none)'}"
                )
            if not isinstance(rec[key], str):
                raise DataError(
                    f"{name}, {where}: '{key}' must be a string, got {type(rec[key]).__name__}"
                )
        chosen, rejected = rec["chosen"], rec["rejected"]
        if not chosen.strip() or not rejected.strip():
            dropped_empty += 1
            continue
        if chosen == rejected:
            dropped_identical += 1
            continue
        rows.append((f"pair{number:05d}", chosen, rejected))

    if dropped_empty:
        log.warning("%s: dropped %d pair(s) with an empty chosen or rejected text", name,
                    dropped_empty)
    if dropped_identical:
        log.warning("%s: dropped %d pair(s) whose chosen and rejected texts are identical", name,
                    dropped_identical)
    df = pd.DataFrame(rows, columns=list(PAIR_COLUMNS), dtype=object)
    if df.empty:
        raise DataError(
            f"{name}: no usable pairs ({len(records)} read, {dropped_empty} empty, "
            f"{dropped_identical} identical)"
        )
    if len(df) < MIN_PAIRS:
        raise DataError(
            f"{name}: only {len(df)} usable pair ({len(records)} read, {dropped_empty} empty, "
            f"{dropped_identical} identical); the workflow needs at least {MIN_PAIRS}, because phase 2 "
            f"measures each steering vector's stability on two disjoint halves of the pairs: point "
            f"data.pairs.source at a file with more pairs"
        )
    report = {
        "source": report_source,
        "rows_read": len(records),
        "dropped_identical": dropped_identical,
        "dropped_empty": dropped_empty,
        "fingerprint": fingerprint(df),
    }
    log.info("%s: %d pairs loaded (%d read)", name, len(df), len(records))
    return df, report


def sample_pairs(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """Return ``n`` pairs drawn without replacement, in their original order.

    ``n`` of ``None``, ``0`` or at least ``len(df)`` returns all pairs (a copy, order kept).
    Otherwise the rows are permuted with ``numpy.random.default_rng(seed)``, the first ``n``
    kept and sorted back into source order, so a larger ``n`` extends a smaller one under the
    same seed. The index is reset.
    """
    if n is not None and int(n) < 0:
        raise ConfigError(f"number of pairs must be >= 0 (0 or null = all), got {n}")
    if n is not None and 0 < int(n) < MIN_PAIRS:
        raise ConfigError(
            f"data.pairs.n (--n): {n} pair is too few; use at least {MIN_PAIRS} (or null for all), because "
            "phase 2 measures each steering vector's stability on two disjoint halves of the pairs"
        )
    if not n or int(n) >= len(df):
        return df.reset_index(drop=True).copy()
    keep = np.sort(np.random.default_rng(seed).permutation(len(df))[: int(n)])
    return df.iloc[keep].reset_index(drop=True)


def parse_transcript(
    text: str, *, merge_consecutive: bool = True, where: str | None = None
) -> list[dict[str, str]]:
    """Split an hh-rlhf transcript into ``[{"role": "user"|"assistant", "content": str}]``.

    Turns start at ``Human:`` or ``Assistant:`` placed at the start of the text or after a blank
    line (``"\\n\\n"``); a marker inside a line (``"...  Human: ..."``) is content, as in the
    source data. Contents are stripped of surrounding whitespace (an empty final answer stays an
    empty assistant turn). Text before the first marker is ignored when blank.

    hh-rlhf has a few transcripts with two consecutive turns of the same role (9 pairs of the
    harmless-base test split); with ``merge_consecutive`` (the default) such runs are joined into
    one turn with ``"\\n\\n"`` so that roles alternate, as chat templates require. With
    ``merge_consecutive=False`` the turns are returned as written.

    Raises
    ------
    DataError
        for non-blank text before the first marker, or a text with no turn at all; ``where``
        (e.g. ``"pairs.jsonl, line 4, chosen"``) prefixes the message.
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(text, str):
        raise DataError(f"{prefix}transcript must be a string, got {type(text).__name__}")
    parts = _TURN.split(text)
    head, markers, contents = parts[0], parts[1::2], parts[2::2]
    if head.strip():
        raise DataError(
            f"{prefix}text before the first 'Human:'/'Assistant:' marker: {head[:60]!r}"
        )
    if not markers:
        raise DataError(f"{prefix}no 'Human:' or 'Assistant:' turn found")
    turns: list[dict[str, str]] = []
    for marker, content in zip(markers, contents):
        role = _ROLES[marker]
        content = content.strip()
        if merge_consecutive and turns and turns[-1]["role"] == role:
            joined = [c for c in (turns[-1]["content"], content) if c]
            turns[-1]["content"] = "\n\n".join(joined)
        else:
            turns.append({"role": role, "content": content})
    return turns


def shared_prefix_chars(chosen: str, rejected: str) -> int:
    """Length in characters of the longest common prefix of ``chosen`` and ``rejected``."""
    return len(os.path.commonprefix([chosen, rejected]))
