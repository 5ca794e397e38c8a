"""Phase 5 summary: one table of every agent's drift (``drift.parquet``/``.csv``), the plots and
sample transcripts.

The table has :data:`driftlib.core.records.DRIFT_COLUMNS`, ``condition`` and :data:`EXTRA_COLUMNS`:
the AQI drift's MDE, ``resolvable`` and p-value floor, each condition's probe AUC with its interval
(NaN without ``aqi.probe_folds``), and the behaviour (NaN when ``behaviour.enabled`` is off): per
condition the refusal rate on unsafe and the over-refusal rate on safe prompts with Wilson
intervals, and the behavioural drift (refusal split after the collaboration minus after the control)
with its paired interval, p-value, p floor, MDE and ``resolvable``; the steered agent's vector's
split-half stability at its injection blocks and, under the conditional operator, its condition's
accuracy on the evaluation prompts (Wilson interval; NaN otherwise)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from driftlib.core.artifacts import read_json, read_table, write_json, write_table
from driftlib.core.profiles import profile_operator
from driftlib.core.records import collect_drift
from driftlib.phases.collaboration.transcripts import transcript_keys

__all__ = ["EXTRA_COLUMNS", "axiom_behaviour", "extra_row", "run_condition", "summarize_collaboration"]

_CONDS = ("solo", "collab", "control")
_RATES = ("refusal_unsafe", "over_refusal_safe")
#: columns the phase-5 table adds to DRIFT_COLUMNS (see the module docstring)
EXTRA_COLUMNS = (
    ["drift_mde", "drift_resolvable", "drift_p_floor"]
    + [f"probe_{c}{s}" for c in _CONDS for s in ("", "_lo", "_hi", "_p")]
    + [f"{r}_{c}{s}" for c in _CONDS for r in _RATES for s in ("", "_lo", "_hi")]
    + ["behaviour_drift", "behaviour_drift_lo", "behaviour_drift_hi", "behaviour_p_value", "behaviour_p_floor",
       "behaviour_mde", "behaviour_resolvable"]
    + ["vector_stability", "condition_accuracy", "condition_ci_low", "condition_ci_high"]
)


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def extra_row(result: dict) -> dict:
    """:data:`EXTRA_COLUMNS` of one drift record (the JSON ``score-collab`` writes)."""
    row: dict = {k: float("nan") for k in EXTRA_COLUMNS}
    d = result["drift"]
    row.update(drift_mde=_num(d.get("mde")), drift_resolvable=bool(d.get("resolvable", False)),
               drift_p_floor=_num(d.get("p_floor")), vector_stability=_num(result.get("vector_stability")),
               condition_accuracy=_num(result.get("condition_accuracy")))
    if result.get("condition_ci"):
        row["condition_ci_low"], row["condition_ci_high"] = map(_num, result["condition_ci"])
    for c in _CONDS:
        probe = result.get(f"probe_{c}")
        if probe:
            row[f"probe_{c}"], row[f"probe_{c}_lo"], row[f"probe_{c}_hi"] = _num(probe["auc"]), *map(_num, probe["ci"])
            row[f"probe_{c}_p"] = _num(probe.get("p_value"))
    b = result.get("behaviour")
    row["behaviour_resolvable"] = bool(b["drift"]["resolvable"]) if b else False
    if not b:
        return row
    for c in _CONDS:
        rates = b["rates"][c]
        for r in _RATES:
            row[f"{r}_{c}"], row[f"{r}_{c}_lo"], row[f"{r}_{c}_hi"] = (
                _num(rates[r]), _num(rates[f"{r}_ci_low"]), _num(rates[f"{r}_ci_high"]))
    bd = b["drift"]
    row.update(behaviour_drift=_num(bd["difference"]), behaviour_drift_lo=_num(bd["ci_low"]),
               behaviour_drift_hi=_num(bd["ci_high"]), behaviour_p_value=_num(bd["p_value"]),
               behaviour_p_floor=_num(bd["p_floor"]), behaviour_mde=_num(bd["mde"]))
    return row


def _sample_transcript(transcripts: pd.DataFrame, tasks: dict[str, str], title: str, n_tasks: int = 2) -> str:
    lines = [f"# {title}", ""]
    keys = transcript_keys(transcripts)[:n_tasks]
    for task, seed in keys:
        lines += [f"## Task {task} (seed {seed})", "", f"> {tasks.get(task, '')}", ""]
        sel = transcripts[(transcripts["run"] == "collab") & (transcripts["task"] == task)
                          & (transcripts["seed"] == seed)].sort_values("turn")
        for _, row in sel.iterrows():
            lines += [f"**{row['speaker']}** (round {row['round']}): {row['text'] or '(empty)'}", ""]
    return "\n".join(lines)


def axiom_behaviour(results: Sequence[dict], table: pd.DataFrame) -> pd.DataFrame:
    """The refusal rates per axiom of every agent with behaviour: one row per (pairing, profile,
    agent, state, axiom), ``state`` one of solo, collab, control, with the columns of
    :func:`driftlib.stats.behaviour.refusal_rates`; every row is ``descriptive`` (a few prompts a class).

    Args:
        results: the drift records (``score-collab``'s JSON), in the order of ``table``'s rows.
        table: the phase-5 table (for each record's ``condition`` and ``operator``).
    """
    rows = []
    for result, (_, r) in zip(results, table.iterrows(), strict=True):
        b = result.get("behaviour")
        for state in _CONDS if b else ():
            for rate in b["by_axiom"][state]:
                rows.append({"pairing": r["pairing"], "profile": r["profile"], "agent": r["agent"],
                             "condition": r["condition"], "operator": r["operator"], "state": state, **rate,
                             "descriptive": True})
    return pd.DataFrame(rows)


def run_condition(profile: str, plain: float, prevention: float | None) -> str:
    """``"plain"`` (every agent at the plain lambda), ``"prevention"`` (every agent pre-steered) or
    ``"game"`` (a mixed profile that phase 6 asked for)."""
    from driftlib.core.profiles import parse_profile

    lams = set(parse_profile(profile))
    if lams == {float(plain)}:
        return "plain"
    if prevention is not None and lams == {float(prevention)}:
        return "prevention"
    return "game"


def summarize_collaboration(drift_files: Sequence[str | Path], transcript_files: Sequence[str | Path],
                            tasks: pd.DataFrame, out_dir: str | Path, *, plain: float = 0.0,
                            prevention: float | None = None, operator: str = "add",
                            stability_floor: float = 0.5) -> pd.DataFrame:
    """The phase-5 table (``drift.parquet``, ``drift.csv``: :data:`DRIFT_COLUMNS`, ``condition``, see
    :func:`run_condition`, ``operator``, the steering operator of the run: a profile's ``@operator``
    or the main ``operator``, :data:`EXTRA_COLUMNS` and ``below_stability_floor``, a steered agent
    whose vector's split-half stability is below ``stability_floor``), the drift plot (plain against pre-steered
    runs, one series per operator),
    the behaviour plot (``behaviour.png``) and, with behaviour, its per-axiom rates
    (``behaviour_axioms.parquet``/``.csv``, :func:`axiom_behaviour`), the trajectory plot, and a markdown sample of each run's
    transcripts (``samples/<pairing>__<profile>.md``)."""
    from driftlib.phases.collaboration import plots

    out_dir = Path(out_dir)
    table = collect_drift(drift_files)
    table["condition"] = [run_condition(p, plain, prevention) for p in table["profile"]]
    table["operator"] = [profile_operator(p) or operator for p in table["profile"]]
    results = [read_json(p) for p in drift_files]
    table = pd.concat([table, pd.DataFrame([extra_row(r) for r in results], columns=EXTRA_COLUMNS)], axis=1)
    table["below_stability_floor"] = table["vector_stability"] < stability_floor
    write_table(table, out_dir / "drift.parquet", metadata={"producer": "collab_summary"})
    write_table(table, out_dir / "drift.csv")
    axioms = axiom_behaviour(results, table)
    if len(axioms):
        write_table(axioms, out_dir / "behaviour_axioms.parquet", metadata={"producer": "collab_summary"})
        write_table(axioms.round(4), out_dir / "behaviour_axioms.csv")
    plots.collab_drift(table, out_dir / "drift.png", main=operator)
    plots.collab_behaviour(table, out_dir / "behaviour.png")
    plots.collab_trajectories([r for r, c in zip(results, table["condition"], strict=True) if c != "game"],
                              out_dir / "trajectories.png")
    task_text = dict(zip(tasks["id"].astype(str), tasks["prompt"], strict=True))
    (out_dir / "samples").mkdir(parents=True, exist_ok=True)
    for path in transcript_files:
        profile_dir = Path(path).parent
        pairing, profile = profile_dir.parent.name, profile_dir.name
        tr, _ = read_table(path, producer="collaborate")
        text = _sample_transcript(tr, task_text, f"{pairing}, profile {profile}")
        (out_dir / "samples" / f"{pairing}__{profile}.md").write_text(text, encoding="utf-8")
    main = table[table["condition"] != "game"]
    summary = {"runs": int(table.groupby(["pairing", "profile"]).ngroups), "plain_lambda": plain,
               "prevention_lambda": prevention,
               "drift": main[["pairing", "agent", "condition", "operator", "drift", "drift_lo", "drift_hi", "p_value",
                              "drift_mde", "drift_resolvable"]].to_dict(orient="records"),
               "behaviour": main[["pairing", "agent", "condition", "operator", "behaviour_drift", "behaviour_drift_lo",
                                  "behaviour_drift_hi", "behaviour_p_value", "behaviour_mde", "behaviour_resolvable"]]
               .to_dict(orient="records"),
               "significant_at_0.05": int((main["p_value"] < 0.05).sum()), "tests": int(len(main)),
               "behaviour_significant_at_0.05": int((main["behaviour_p_value"] < 0.05).sum()),
               "resolvable": int(main["drift_resolvable"].sum()),
               "behaviour_resolvable": int(main["behaviour_resolvable"].sum())}
    write_json(summary, out_dir / "collab_summary.json")
    return table
