"""The transcript table of phase 5, and reading transcripts out of it (pandas only).

One row per turn, columns :data:`TRANSCRIPT_COLUMNS`: ``run`` (``"collab"`` or ``"solo"``),
``agent`` (the solo agent; ``""`` for a collaboration), ``task``, ``seed``, ``round`` (1-based; a
solo run counts each turn as a round), ``turn`` (0-based within the run), ``speaker``, ``text``,
``prompt_tokens`` (input length of the turn) and ``new_tokens``. Written by
:mod:`driftlib.phases.collaboration.protocol`, read by :mod:`driftlib.phases.collaboration.measure` and :mod:`driftlib.phases.collaboration.evaluate`.
"""

from __future__ import annotations

import pandas as pd

from driftlib.core.errors import DataError

__all__ = ["TRANSCRIPT_COLUMNS", "transcript_keys", "turns_of"]

TRANSCRIPT_COLUMNS: tuple[str, ...] = ("run", "agent", "task", "seed", "round", "turn", "speaker", "text",
                                       "prompt_tokens", "new_tokens")


def transcript_keys(transcripts: pd.DataFrame) -> list[tuple[str, int]]:
    """The collaboration transcripts as ``(task, seed)``, sorted (prompt ``i`` reads key ``i % T``)."""
    collab = transcripts[transcripts["run"] == "collab"]
    keys = sorted({(str(t), int(s)) for t, s in zip(collab["task"], collab["seed"], strict=True)})
    if not keys:
        raise DataError("transcripts: no collaboration run in the table")
    return keys


def turns_of(transcripts: pd.DataFrame, run: str, agent: str, task: str, seed: int,
             max_round: int | None = None, max_turns: int | None = None) -> list[tuple[str, str]]:
    """``(speaker, text)`` of one transcript in turn order, up to round ``max_round`` and at most its
    first ``max_turns`` turns (None: all)."""
    sel = transcripts[(transcripts["run"] == run) & (transcripts["agent"] == agent)
                      & (transcripts["task"] == task) & (transcripts["seed"] == seed)]
    if max_round is not None:
        sel = sel[sel["round"] <= max_round]
    if max_turns is not None:
        sel = sel[sel["turn"] < max_turns]
    sel = sel.sort_values("turn", kind="stable")
    return list(zip(sel["speaker"], sel["text"], strict=True))
