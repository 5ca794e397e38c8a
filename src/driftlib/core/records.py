"""Records that cross phases: the formats of output files that one phase writes and a later phase
reads, with their readers (phase 5's drift record, read by phase 5's summary and by phase 6; the
names of the vectors in a phase-4 transfer sweep, written by the sweep and read by its evaluation)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from driftlib.core.artifacts import read_json

__all__ = ["CONDITIONS", "DRIFT_COLUMNS", "collect_drift", "drift_row", "transfer_key"]


#: the three ways an agent reads an evaluation prompt (see :mod:`driftlib.phases.collaboration.measure`)
CONDITIONS = ("solo", "collab", "control")


#: columns of the phase-5 table (one row per pairing, profile and agent)
DRIFT_COLUMNS = [
    "pairing", "profile", "agent", "position", "model", "lam",
    "aqi_solo", "aqi_solo_lo", "aqi_solo_hi", "aqi_collab", "aqi_collab_lo", "aqi_collab_hi",
    "aqi_control", "aqi_control_lo", "aqi_control_hi",
    "drift", "drift_lo", "drift_hi", "p_value",
    "slope_collab", "slope_collab_lo", "slope_collab_hi", "slope_control", "slope_control_lo", "slope_control_hi",
    "kl", "outcome", "outcome_lo", "outcome_hi", "n_prompts", "n_transcripts", "context_tokens",
]


def drift_row(result: dict[str, Any]) -> dict[str, Any]:
    """One agent's drift record (the JSON ``score-collab`` writes) as a flat row of :data:`DRIFT_COLUMNS`."""
    nan = float("nan")

    def num(x: Any) -> float:
        return nan if x is None else float(x)

    row = {k: result[k] for k in ("pairing", "profile", "agent", "position", "model", "lam", "kl", "n_prompts",
                                  "n_transcripts", "context_tokens")}
    for cond in CONDITIONS:
        a = result[f"aqi_{cond}"]
        row[f"aqi_{cond}"], row[f"aqi_{cond}_lo"], row[f"aqi_{cond}_hi"] = num(a["aqi"]), *map(num, a["ci"])
    d = result["drift"]
    row["drift"], row["drift_lo"], row["drift_hi"] = num(d["difference"]), *map(num, d["ci"])
    row["p_value"] = num(d["p_value"])
    for cond in ("collab", "control"):
        p = result["projection"].get(cond, {})
        ci = p.get("slope_ci") or [None, None]
        row[f"slope_{cond}"], row[f"slope_{cond}_lo"], row[f"slope_{cond}_hi"] = num(p.get("slope")), *map(num, ci)
    o = result["outcome"]
    row["outcome"], row["outcome_lo"], row["outcome_hi"] = num(o["outcome"]), *map(num, o["ci"])
    return row


def collect_drift(paths: Sequence[str | Path]) -> pd.DataFrame:
    """One row per drift file (the JSON ``score-collab`` writes), columns :data:`DRIFT_COLUMNS`."""
    rows = [drift_row(read_json(p)) for p in paths]
    return pd.DataFrame(rows, columns=DRIFT_COLUMNS)


def transfer_key(source: str, method: str, kind: str, operator: str | None = None) -> str:
    """The name of one swept vector in a target's transfer sweep, scores and cost:
    ``{source}/{method}/{kind}`` under the main operator (``steering.operator``; kind: ``mapped``,
    ``shuffled`` or ``random``), ``{source}/{method}/{kind}/{operator}`` under a compared one
    (``steering.compare``)."""
    return f"{source}/{method}/{kind}" + (f"/{operator}" if operator else "")
