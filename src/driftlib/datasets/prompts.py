"""LITMUS-style evaluation prompts: loading, validation and balanced sampling.

The internal schema is a frame with the columns ``id, axiom, safety_label, text`` (all strings).
Prompts come from the file bundled with the package (``driftlib/data/litmus_sample.jsonl``), from a
local file (``.jsonl``, ``.jsonl.gz``, ``.json``, ``.csv``, ``.parquet``) or from the Hugging Face
hub (``"hf:hasnat79/litmus"``). A source file has the columns ``axiom``, ``safety_label`` (``safe``
or ``unsafe``, compared after stripping and lower-casing), ``input`` (the prompt text; ``text`` is
accepted as well) and, optionally, ``id``.

Documented behaviour:

* rows whose text is empty, whitespace-only or missing, or holds nothing but NULs, zero-width
  characters (:data:`INVISIBLE`) and whitespace, are dropped; the count is logged as a warning
  (the invisible-only ones in a warning of their own) and returned in the report
  (``dropped_empty``);
* texts that repeat an earlier row's text (compared without invisible characters and surrounding
  whitespace) are kept, and counted in a warning that names the first repeat: repeated prompts
  weigh more in the AQI, and a class made of one repeated text has no AQI;
* everything else that is wrong with a row (missing key, unknown label, non-string value,
  duplicate id, malformed JSON, bytes that are not UTF-8) raises
  :class:`~driftlib.core.errors.DataError` naming the file and the line (text files, 1-based), the row
  (Parquet and hub data, 1-based) or the record (JSON arrays, 1-based);
* ids are the file's ``id`` column (as strings) when present, else ``p{row:05d}`` with ``row`` the
  0-based position of the record in the source, counted before anything is dropped, so an id
  always names the same prompt of the same source;
* texts are kept exactly as written (not stripped); axioms are stripped of surrounding blanks and
  labels are normalised to lower case.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import math
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftlib.core.artifacts import fingerprint
from driftlib.core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: the seven LITMUS axioms, in the order used for outputs
AXIOMS: tuple[str, ...] = (
    "Civility & Tolerance",
    "Duty & Accountability",
    "Empathy & Helpfulness",
    "Information Seeking",
    "Justice & Rights",
    "Well-being & Peace",
    "Wisdom & Knowledge",
)
#: the two safety labels, in output order
LABELS: tuple[str, ...] = ("safe", "unsafe")
#: columns of the frame returned by :func:`load_prompts`
PROMPT_COLUMNS: tuple[str, ...] = ("id", "axiom", "safety_label", "text")

BUNDLED_PROMPTS = "litmus_sample.jsonl"
HF_PREFIX = "hf:"
#: characters that show nothing: NUL and the zero-width ones (space, non-joiner, joiner, word
#: joiner, no-break space / byte-order mark, Mongolian vowel separator)
INVISIBLE = "\x00\u200b\u200c\u200d\u2060\ufeff\u180e"
_INVISIBLE_TABLE = str.maketrans("", "", INVISIBLE)


# ----------------------------------------------------------------------------------------------
# Reading helpers shared with driftlib.datasets.pairs
# ----------------------------------------------------------------------------------------------


def bundled_path(filename: str) -> tuple[bytes, str]:
    """Return the bytes and the display name of a data file shipped in ``driftlib/data``."""
    res = resources.files("driftlib").joinpath("data", filename)
    try:
        return res.read_bytes(), str(res)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(
            f"{res}: bundled data file not found; reinstall driftlib with its package data "
            f"(pip install -e .)"
        ) from exc


def read_bytes(path: Path) -> bytes:
    """Read a local file (gunzipping ``.gz``), turning I/O failures into :class:`DataError`."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read file ({exc})") from exc
    return data


def decode_lines(data: bytes, name: str) -> list[str]:
    """Decode ``data`` as UTF-8 one line at a time, so that a bad byte is reported by line.

    A leading byte-order mark is removed and ``\\r\\n`` line ends are accepted. The returned list
    has one entry per physical line (without its line end); index ``i`` is line ``i + 1``.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    lines: list[str] = []
    for lineno, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{name}, line {lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                f"{exc.start + 1}); re-encode the file as UTF-8"
            ) from exc
        lines.append(line[:-1] if line.endswith("\r") else line)
    return lines


def json_lines(lines: Sequence[str], name: str) -> Iterable[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for every non-blank line of a JSON-lines file."""
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{name}, line {lineno}: malformed JSON ({exc})") from exc
        if not isinstance(obj, dict):
            raise DataError(
                f"{name}, line {lineno}: expected a JSON object, found {type(obj).__name__}"
            )
        yield lineno, obj


def json_array(lines: Sequence[str], name: str) -> list[dict[str, Any]]:
    """Parse a whole-file JSON array of objects (lines already decoded)."""
    try:
        obj = json.loads("\n".join(lines))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{name}, line {exc.lineno}, column {exc.colno}: malformed JSON ({exc.msg})"
        ) from exc
    if not isinstance(obj, list):
        raise DataError(f"{name}: expected a JSON array of objects, found {type(obj).__name__}")
    for i, rec in enumerate(obj, start=1):
        if not isinstance(rec, dict):
            raise DataError(
                f"{name}, record {i}: expected a JSON object, found {type(rec).__name__}"
            )
    return obj


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def hub_records(dataset_id: str, name: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Load a hub dataset with :func:`datasets.load_dataset` and return its rows as dicts."""
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, **kwargs)
    except Exception as exc:  # the hub raises many types (offline, not found, gated, ...)
        raise DataError(
            f"{name}: cannot load hub dataset '{dataset_id}' ({type(exc).__name__}: {exc}); "
            f"check the id, the network, HF_HUB_OFFLINE and the local cache"
        ) from exc
    split = kwargs.get("split")
    if isinstance(ds, Mapping) and split in ds and not _looks_like_columns(ds):
        ds = ds[split]
    if hasattr(ds, "to_pandas"):
        frame = ds.to_pandas()
    elif isinstance(ds, Mapping):
        try:
            frame = pd.DataFrame(dict(ds))
        except ValueError as exc:
            raise DataError(f"{name}: hub data is not a table ({exc})") from exc
    elif isinstance(ds, list):
        frame = pd.DataFrame(ds)
    else:
        raise DataError(f"{name}: unexpected object from load_dataset: {type(ds).__name__}")
    return frame.to_dict("records")


def _looks_like_columns(obj: Mapping[str, Any]) -> bool:
    """True for a dict of equal-length lists (a table), False for a dict of splits."""
    return bool(obj) and all(isinstance(v, list) for v in obj.values())


def split_hub_source(source: str) -> str:
    dataset_id = source[len(HF_PREFIX):].strip()
    if not dataset_id:
        raise DataError(f"'{source}': no dataset id after 'hf:' (e.g. hf:hasnat79/litmus)")
    return dataset_id


# ----------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------


def _csv_records(lines: Sequence[str], name: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Parse CSV text with a header; returns records and their start-line labels."""
    reader = csv.reader(io.StringIO("\n".join(lines) + "\n", newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{name}: empty CSV file (no header line)") from None
    except csv.Error as exc:
        raise DataError(f"{name}, line 1: malformed CSV ({exc})") from exc
    header = [h.strip() for h in header]
    records: list[dict[str, Any]] = []
    wheres: list[str] = []
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"{name}, line {start}: malformed CSV ({exc})") from exc
        if row and any(cell.strip() for cell in row):
            if len(row) != len(header):
                raise DataError(
                    f"{name}, line {start}: {len(row)} fields, the header has {len(header)}"
                )
            records.append(dict(zip(header, row)))
            wheres.append(f"line {start}")
        start = reader.line_num + 1
    return records, wheres


def _prompt_records(
    source: str | os.PathLike, split: str
) -> tuple[list[dict[str, Any]], list[str], str, str]:
    """Read a prompt source into ``(records, where-labels, display name, report source)``."""
    if isinstance(source, str) and source == "bundled":
        data, name = bundled_path(BUNDLED_PROMPTS)
        lines = decode_lines(data, name)
        pairs = list(json_lines(lines, name))
        return ([o for _, o in pairs], [f"line {n}" for n, _ in pairs], name,
                f"bundled:{BUNDLED_PROMPTS}")
    if isinstance(source, str) and source.startswith(HF_PREFIX):
        dataset_id = split_hub_source(source)
        name = f"hf:{dataset_id}[{split}]"
        records = hub_records(dataset_id, name, split=split)
        return records, [f"row {i}" for i in range(1, len(records) + 1)], name, name

    path = Path(source)
    name = str(path)
    suffixes = "".join(path.suffixes[-2:]).lower()
    kind = path.suffix.lower()
    if kind == ".parquet":
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
        records = frame.to_dict("records")
        return records, [f"row {i}" for i in range(1, len(records) + 1)], name, name
    if kind not in (".jsonl", ".json", ".csv") and suffixes != ".jsonl.gz":
        raise DataError(
            f"{path}: unsupported prompt file type '{path.suffix}' "
            f"(use .jsonl, .jsonl.gz, .json, .csv, .parquet, 'bundled' or 'hf:<dataset id>')"
        )
    lines = decode_lines(read_bytes(path), name)
    if kind == ".csv":
        records, wheres = _csv_records(lines, name)
        return records, wheres, name, name
    if kind == ".json":
        records = json_array(lines, name)
        return records, [f"record {i}" for i in range(1, len(records) + 1)], name, name
    pairs = list(json_lines(lines, name))
    return [o for _, o in pairs], [f"line {n}" for n, _ in pairs], name, name


def _resolve_text_column(columns: Sequence[str], text_column: str) -> str | None:
    for candidate in (text_column, "input", "text"):
        if candidate in columns:
            return candidate
    return None


def load_prompts(
    source: str | os.PathLike = "bundled", *, split: str = "train", text_column: str = "input"
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Load and validate LITMUS-style prompts.

    Parameters
    ----------
    source:
        ``"bundled"`` (the sample shipped with driftlib), a local ``.jsonl``/``.jsonl.gz``/
        ``.json``/``.csv``/``.parquet`` file, or ``"hf:<dataset id>"`` (loaded with
        ``datasets.load_dataset(id, split=split)``).
    split:
        The hub split (ignored for files).
    text_column:
        The column holding the prompt text; when it is absent, ``input`` and then ``text`` are
        tried.

    Returns
    -------
    ``(frame, report)``: the frame has the columns ``id, axiom, safety_label, text`` in source
    order with a fresh index; the report is ``{"source", "rows_read", "dropped_empty",
    "fingerprint"}``.

    Raises
    ------
    DataError
        naming the file and the line/row/record for any malformed input (see the module doc).
    """
    records, wheres, name, report_source = _prompt_records(source, split)
    columns: list[str] = []
    seen_cols: set[str] = set()
    for rec in records:
        for key in rec:
            if key not in seen_cols:
                seen_cols.add(key)
                columns.append(str(key))
    text_col = _resolve_text_column(columns, text_column)
    missing = [c for c in ("axiom", "safety_label") if c not in seen_cols]
    if text_col is None:
        missing.append(text_column if text_column in ("input", "text") else
                       f"{text_column} (or input/text)")
    if missing and records:
        raise DataError(
            f"{name}: missing column(s) {', '.join(missing)}; columns found: "
            f"{', '.join(columns) if columns else '(none)'}"
        )
    has_ids = "id" in seen_cols

    rows: list[tuple[str, str, str, str]] = []
    first_seen: dict[str, str] = {}
    first_text: dict[str, tuple[str, str]] = {}
    dropped = invisible = repeats = relabelled = 0
    first_repeat = ""
    for pos, (rec, where) in enumerate(zip(records, wheres)):
        for col in ("axiom", "safety_label", text_col) + (("id",) if has_ids else ()):
            if col not in rec:
                raise DataError(
                    f"{name}, {where}: missing column '{col}'; columns found: "
                    f"{', '.join(map(str, rec)) or '(none)'}"
                )
        axiom = rec["axiom"]
        if _is_missing(axiom) or not isinstance(axiom, str) or not axiom.strip():
            raise DataError(f"{name}, {where}: axiom must be a non-empty string, got {axiom!r}")
        axiom = axiom.strip()
        raw_label = rec["safety_label"]
        label = raw_label.strip().lower() if isinstance(raw_label, str) else None
        if label not in LABELS:
            raise DataError(
                f"{name}, {where}: safety_label {raw_label!r} is not one of "
                f"{', '.join(LABELS)}"
            )
        if has_ids:
            raw_id = rec["id"]
            if _is_missing(raw_id) or (isinstance(raw_id, str) and not raw_id.strip()):
                raise DataError(f"{name}, {where}: empty id")
            if isinstance(raw_id, float) and raw_id.is_integer():
                raw_id = int(raw_id)
            pid = str(raw_id)
            if pid in first_seen:
                raise DataError(
                    f"{name}: duplicate id '{pid}' at {first_seen[pid]} and {where}"
                )
            first_seen[pid] = where
        else:
            pid = f"p{pos:05d}"
        text = rec[text_col]
        if _is_missing(text):
            text = ""
        if not isinstance(text, str):
            raise DataError(
                f"{name}, {where}: {text_col} must be a string, got {type(text).__name__}"
            )
        visible = text.translate(_INVISIBLE_TABLE).strip()
        if not visible:
            dropped += 1
            invisible += bool(text.strip())
            continue
        if visible in first_text:
            earlier, earlier_label = first_text[visible]
            repeats += 1
            relabelled += earlier_label != label
            first_repeat = first_repeat or f"{where} repeats {earlier}"
        else:
            first_text[visible] = (where, label)
        rows.append((pid, axiom, label, text))

    if dropped:
        log.warning("%s: dropped %d row(s) with an empty %s", name, dropped, text_col)
    if invisible:
        log.warning("%s: %d of them held only NULs, zero-width characters and whitespace", name, invisible)
    if repeats:
        log.warning(
            "%s: %d row(s) repeat the %s of an earlier row (first: %s)%s; repeated prompts weigh more in the "
            "AQI, and a class made of one repeated text has no AQI", name, repeats, text_col, first_repeat,
            f", {relabelled} of them with the other safety_label" if relabelled else "")
    df = pd.DataFrame(rows, columns=list(PROMPT_COLUMNS), dtype=object)
    if df.empty:
        raise DataError(f"{name}: no prompts left ({len(records)} row(s) read, {dropped} empty)")
    unknown = sorted(set(df["axiom"]) - set(AXIOMS))
    if unknown:
        log.warning("%s: axioms outside the LITMUS set: %s", name, ", ".join(unknown))
    report = {
        "source": report_source,
        "rows_read": len(records),
        "dropped_empty": dropped,
        "fingerprint": fingerprint(df),
    }
    log.info("%s: %d prompts loaded (%d read, %d empty dropped)", name, len(df), len(records),
             dropped)
    return df, report


def _group_seed(seed: int, axiom: str, label: str) -> np.random.Generator:
    """A generator for one (axiom, label) group, derived from ``seed`` and the group's name.

    Deriving per group keeps a group's sample the same whether or not other axioms are selected.
    """
    key = zlib.crc32(f"{axiom}|{label}".encode())
    return np.random.default_rng([int(seed), key])


def sample_balanced(
    df: pd.DataFrame, n_per_group: int | None, seed: int, *, axioms: Sequence[str] | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Draw ``n_per_group`` prompts per (axiom, safety_label) group, without replacement.

    Each group is permuted with ``numpy.random.default_rng([seed, crc32("axiom|label")])`` and
    its first ``n`` rows are kept, so a group's sample depends only on the seed and the group
    (selecting fewer axioms does not change it) and a larger ``n`` extends a smaller one.
    ``n_per_group`` of ``None`` or ``0`` keeps every row. A group with fewer rows than asked is
    taken whole, logged and listed in the report's ``shortfalls``; rows are never duplicated.

    Output order: axioms sorted by name, then ``safe`` before ``unsafe``, then the sampled order
    (source order when a whole group is taken).

    Returns ``(frame, report)`` with report ``{"per_group", "seed", "n_rows", "groups":
    {"axiom|label": count}, "shortfalls": [{"axiom", "safety_label", "available",
    "requested"}]}``.

    Raises
    ------
    DataError
        for an unknown axiom in ``axioms`` (listing the available ones), or an axiom that has
        only one of the two labels (the AQI needs both).
    ConfigError
        for a negative ``n_per_group``.
    """
    missing = [c for c in ("axiom", "safety_label") if c not in df.columns]
    if missing:
        raise DataError(f"prompt frame: missing column(s) {', '.join(missing)}; "
                        f"columns found: {', '.join(map(str, df.columns))}")
    if n_per_group is not None and int(n_per_group) < 0:
        raise ConfigError(f"n_per_group must be >= 0 (0 or null = all rows), got {n_per_group}")
    n = int(n_per_group) if n_per_group else None

    available = sorted(set(df["axiom"]))
    if axioms is not None:
        unknown = [a for a in axioms if a not in available]
        if unknown:
            raise DataError(
                f"unknown axiom(s) {', '.join(map(repr, unknown))}; available: "
                f"{', '.join(available)}"
            )
        selected = sorted(set(axioms))
    else:
        selected = available
    if not selected:
        raise DataError("no prompts to sample from (empty frame or empty axiom selection)")

    parts: list[pd.DataFrame] = []
    groups: dict[str, int] = {}
    shortfalls: list[dict[str, Any]] = []
    for axiom in selected:
        in_axiom = df[df["axiom"] == axiom]
        present = set(in_axiom["safety_label"])
        absent = [lab for lab in LABELS if lab not in present]
        if absent:
            raise DataError(
                f"axiom '{axiom}' has no '{absent[0]}' prompts (labels present: "
                f"{', '.join(sorted(map(str, present)))}); the AQI needs both safe and unsafe"
            )
        for label in LABELS:
            group = in_axiom[in_axiom["safety_label"] == label]
            size = len(group)
            if n is None or n == size:
                take = group
            elif n > size:
                take = group
                shortfalls.append({"axiom": axiom, "safety_label": label,
                                   "available": size, "requested": n})
                log.warning("group %s|%s has %d prompts, %d requested: taking all of them",
                            axiom, label, size, n)
            else:
                order = _group_seed(seed, axiom, label).permutation(size)[:n]
                take = group.iloc[order]
            parts.append(take)
            groups[f"{axiom}|{label}"] = len(take)

    out = pd.concat(parts, ignore_index=True)
    report = {
        "per_group": n_per_group,
        "seed": seed,
        "n_rows": len(out),
        "groups": groups,
        "shortfalls": shortfalls,
    }
    return out, report

