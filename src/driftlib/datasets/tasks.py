"""Collaborative tasks for phase 5: loading, validation and seeded sampling.

A task is a problem that a team of two or three agents solves by taking turns on a shared
transcript. Some tasks are *loaded*: besides the legitimate work they carry an ethically loaded
sub-goal (cutting a safety step, misleading customers, collecting data without consent, ...), so
that a run can observe whether an agent goes along with it, flags it or declines it.

Tasks come from the file bundled with the package (``driftlib/data/collab_tasks.jsonl``, see
``driftlib/data/README.md``) or from a user's JSON-lines file (``.jsonl`` or ``.jsonl.gz``) with
exactly the same keys, one object per line:

=========== ================ ==========================================================
key         type             meaning
=========== ================ ==========================================================
``id``      str              unique, non-empty (surrounding blanks are stripped)
``version`` int (>= 1)       version of the task file; the same on every line
``domain``  str              non-empty (stripped), e.g. ``planning``
``prompt``  str              the problem as posed to the team; not blank; kept as written
``loaded``  bool             whether the task carries an ethically loaded sub-goal
``subgoal`` str              the loaded part in one sentence; non-blank iff ``loaded``
``rubric``  list[str]        non-empty list of non-blank criteria for judging the outcome
=========== ================ ==========================================================

Anything wrong (bytes that are not UTF-8, malformed JSON, a line that is not an object, missing
or unknown keys, a wrong type, a blank prompt, a duplicate id, a bad rubric, ``loaded`` and
``subgoal`` disagreeing, two versions in one file, an empty file) raises
:class:`~driftlib.core.errors.DataError` naming the file and the 1-based line. Blank lines are skipped.
Results depend on the tasks, so the report carries the file's ``version`` and a fingerprint of
the table; bump ``version`` whenever a task file changes.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftlib.core.artifacts import fingerprint
from driftlib.core.errors import ConfigError, DataError
from driftlib.datasets.prompts import bundled_path, decode_lines, json_lines, read_bytes

#: columns of the frame returned by :func:`load_tasks`, in order (also the keys of a task line)
TASK_COLUMNS: tuple[str, ...] = ("id", "version", "domain", "prompt", "loaded", "subgoal",
                                 "rubric")
BUNDLED_TASKS = "collab_tasks.jsonl"


def _task_lines(source: str | os.PathLike) -> tuple[list[tuple[int, dict[str, Any]]], str, str]:
    """Read a task source into ``([(line number, object)], display name, report source)``."""
    if isinstance(source, str) and source == "bundled":
        data, name = bundled_path(BUNDLED_TASKS)
        report_source = f"bundled:{BUNDLED_TASKS}"
    else:
        path = Path(source)
        name = str(path)
        if path.suffix.lower() != ".jsonl" and "".join(path.suffixes[-2:]).lower() != ".jsonl.gz":
            raise DataError(
                f"{path}: unsupported task file type '{path.suffix}' "
                f"(use a .jsonl or .jsonl.gz file, or 'bundled')"
            )
        data = read_bytes(path)
        report_source = name
    lines = decode_lines(data, name)
    return list(json_lines(lines, name)), name, report_source


def _check_record(rec: dict[str, Any], where: str) -> tuple[Any, ...]:
    """Validate one task object; return its values in :data:`TASK_COLUMNS` order.

    ``where`` is the ``"<file>, line <n>"`` prefix used in error messages.
    """
    missing = [k for k in TASK_COLUMNS if k not in rec]
    if missing:
        raise DataError(f"{where}: missing key(s) {', '.join(missing)}; "
                        f"a task has exactly the keys {', '.join(TASK_COLUMNS)}")
    unknown = [str(k) for k in rec if k not in TASK_COLUMNS]
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                        f"a task has exactly the keys {', '.join(TASK_COLUMNS)}")

    def text(key: str) -> str:
        value = rec[key]
        if not isinstance(value, str):
            raise DataError(f"{where}: {key} must be a string, got {type(value).__name__}")
        return value

    tid = text("id").strip()
    if not tid:
        raise DataError(f"{where}: empty id")
    version = rec["version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise DataError(f"{where}: version must be an integer, got {version!r}")
    if version < 1:
        raise DataError(f"{where}: version must be >= 1, got {version}")
    domain = text("domain").strip()
    if not domain:
        raise DataError(f"{where}: empty domain")
    prompt = text("prompt")
    if not prompt.strip():
        raise DataError(f"{where}: empty prompt")
    loaded = rec["loaded"]
    if not isinstance(loaded, bool):
        raise DataError(f"{where}: loaded must be true or false, got {loaded!r}")
    subgoal = text("subgoal")
    if loaded and not subgoal.strip():
        raise DataError(f"{where}: loaded is true but subgoal is empty; "
                        f"name the ethically loaded part in one sentence")
    if not loaded and subgoal.strip():
        raise DataError(f"{where}: loaded is false but subgoal is not empty; "
                        f"set loaded to true or subgoal to \"\"")
    rubric = rec["rubric"]
    if not isinstance(rubric, list) or not rubric:
        raise DataError(f"{where}: rubric must be a non-empty list of strings, got {rubric!r}")
    for i, item in enumerate(rubric, start=1):
        if not isinstance(item, str) or not item.strip():
            raise DataError(f"{where}: rubric item {i} must be a non-empty string, got {item!r}")
    return tid, version, domain, prompt, loaded, subgoal, list(rubric)


def table_fingerprint(df: pd.DataFrame) -> str:
    """Fingerprint of a task table: :func:`~driftlib.core.artifacts.fingerprint` of the frame with
    each rubric encoded as a JSON string (lists are not hashable by pandas)."""
    return fingerprint(df.assign(rubric=df["rubric"].map(json.dumps)))


def load_tasks(source: str | os.PathLike = "bundled") -> tuple[pd.DataFrame, dict[str, Any]]:
    """Load and validate a collaborative task file.

    Parameters
    ----------
    source:
        ``"bundled"`` (``driftlib/data/collab_tasks.jsonl``) or the path of a ``.jsonl`` /
        ``.jsonl.gz`` file with the same keys (see the module doc).

    Returns
    -------
    ``(frame, report)``. The frame has the columns of :data:`TASK_COLUMNS` in file order with a
    fresh index (``version`` int, ``loaded`` bool, ``rubric`` a list of strings, the rest
    strings). The report is ``{"source", "file", "version", "n", "n_loaded", "domains",
    "fingerprint"}``: ``source`` is ``"bundled:collab_tasks.jsonl"`` or the path given, ``file``
    the file name, ``domains`` the task count per domain (sorted by name) and ``fingerprint``
    :func:`~driftlib.core.artifacts.fingerprint` of the frame with each rubric JSON-encoded.

    Raises
    ------
    DataError
        naming the file and the 1-based line for anything malformed (see the module doc).
    """
    pairs, name, report_source = _task_lines(source)
    rows: list[tuple[Any, ...]] = []
    first_seen: dict[str, int] = {}
    first_version: tuple[int, int] | None = None
    for lineno, rec in pairs:
        where = f"{name}, line {lineno}"
        row = _check_record(rec, where)
        tid, version = row[0], row[1]
        if tid in first_seen:
            raise DataError(f"{where}: duplicate id '{tid}' (first at line {first_seen[tid]})")
        first_seen[tid] = lineno
        if first_version is None:
            first_version = (version, lineno)
        elif version != first_version[0]:
            raise DataError(
                f"{where}: version {version} differs from version {first_version[0]} at line "
                f"{first_version[1]}; a task file has a single version"
            )
        rows.append(row)
    if not rows:
        raise DataError(f"{name}: no tasks (the file is empty)")

    df = pd.DataFrame(rows, columns=list(TASK_COLUMNS))
    for col in ("id", "domain", "prompt", "subgoal", "rubric"):
        df[col] = df[col].astype(object)
    df["version"] = df["version"].astype("int64")
    df["loaded"] = df["loaded"].astype(bool)
    report = {
        "source": report_source,
        "file": Path(name).name,
        "version": int(df["version"].iloc[0]),
        "n": int(len(df)),
        "n_loaded": int(df["loaded"].sum()),
        "domains": dict(sorted(Counter(df["domain"]).items())),
        "fingerprint": table_fingerprint(df),
    }
    return df, report


def _group_rng(seed: int, group: str) -> np.random.Generator:
    """A generator for one group (``"loaded"``, ``"unloaded"`` or ``"all"``) derived from seed."""
    return np.random.default_rng([int(seed), zlib.crc32(group.encode())])


def sample_tasks(
    df: pd.DataFrame, n: int | None, seed: int, *, loaded_share: float | None = None
) -> pd.DataFrame:
    """Choose ``n`` tasks without replacement, reproducibly; the result is sorted by ``id``.

    Parameters
    ----------
    df:
        A task frame from :func:`load_tasks` (needs the columns ``id`` and ``loaded``).
    n:
        How many tasks to keep; ``None`` or ``0`` keeps every task (``loaded_share`` is then
        ignored).
    seed:
        The seed. The same tasks, ``n``, seed and share give the same sample, whatever the row
        order of ``df`` (rows are put in ``id`` order before drawing).
    loaded_share:
        ``None``: draw ``n`` tasks from the whole frame (the loaded share of the sample then
        varies by chance). A number in ``[0, 1]``: draw ``round(n * loaded_share)`` loaded tasks
        (halves round up) and the rest from the unloaded ones, each group permuted by its own
        generator. Pass ``df["loaded"].mean()`` to keep the file's share.

    Returns
    -------
    The chosen rows, sorted by ``id``, with a fresh index.

    Raises
    ------
    ConfigError
        for a negative ``n``, ``n`` larger than the frame, a share outside ``[0, 1]``, or a share
        that asks for more loaded or unloaded tasks than the frame has.
    DataError
        for a frame without the ``id`` or ``loaded`` column.
    """
    missing = [c for c in ("id", "loaded") if c not in df.columns]
    if missing:
        raise DataError(f"task frame: missing column(s) {', '.join(missing)}; "
                        f"columns found: {', '.join(map(str, df.columns))}")
    if n is not None and int(n) < 0:
        raise ConfigError(f"n must be >= 0 (0 or null = all tasks), got {n}")
    if not n:
        chosen = df
    else:
        df = df.sort_values("id", kind="stable")  # the draw does not depend on the row order
        n = int(n)
        if n > len(df):
            raise ConfigError(f"n = {n} tasks requested, the task file has {len(df)}")
        if loaded_share is None:
            chosen = df.iloc[_group_rng(seed, "all").permutation(len(df))[:n]]
        else:
            share = float(loaded_share)
            if not 0.0 <= share <= 1.0 or math.isnan(share):
                raise ConfigError(f"loaded_share must lie in [0, 1], got {loaded_share}")
            k_loaded = int(math.floor(n * share + 0.5))
            parts = []
            for group, mask, k in (("loaded", df["loaded"].astype(bool), k_loaded),
                                   ("unloaded", ~df["loaded"].astype(bool), n - k_loaded)):
                pool = df[mask]
                if k > len(pool):
                    raise ConfigError(
                        f"loaded_share = {loaded_share} with n = {n} needs {k} {group} tasks, "
                        f"the task file has {len(pool)}"
                    )
                parts.append(pool.iloc[_group_rng(seed, group).permutation(len(pool))[:k]])
            chosen = pd.concat(parts)
    return chosen.sort_values("id", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# task outcome: a label-free, lexical proxy

#: function words left out of a rubric criterion's content words
_STOPWORDS = frozenset(
    "about after also and any are because been before being between both but can could does each else "
    "every from have here into it's its just more most much must only other over same should some such "
    "than that their them then there these they this those through under until very what when where "
    "which while whose will with within without would your".split()
)


def content_words(text: str) -> set[str]:
    """Lower-cased alphabetic words of four or more letters, without function words."""
    import re

    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 4 and w not in _STOPWORDS}


def rubric_coverage(rubric: list[str], text: str) -> float:
    """The task outcome of one transcript: the mean, over the rubric's criteria, of the share of a
    criterion's content words (:func:`content_words`) that occur in ``text``; in ``[0, 1]``.

    A crude, deterministic proxy that needs no judge model and no labels: it rewards transcripts
    that talk about what the rubric asks for, and cannot tell agreeing from declining. A criterion
    without content words is left out; NaN when none has any.
    """
    words = content_words(text)
    shares = [len(c & words) / len(c) for c in map(content_words, rubric) if c]
    return float(np.mean(shares)) if shares else float("nan")
