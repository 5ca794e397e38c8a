"""Phase 5 summary: one table of every agent's drift (``drift.parquet``/``.csv``), the plots and
sample transcripts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from driftlib.core.artifacts import read_json, read_table, write_json, write_table
from driftlib.core.records import collect_drift
from driftlib.phases.collaboration.transcripts import transcript_keys

__all__ = ["run_condition", "summarize_collaboration"]


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
                            prevention: float | None = None) -> pd.DataFrame:
    """The phase-5 table (``drift.parquet``, ``drift.csv``: :data:`DRIFT_COLUMNS` and ``condition``,
    see :func:`run_condition`), the drift plot (plain against pre-steered runs), the trajectory plot,
    and a markdown sample of each run's transcripts (``samples/<pairing>__<profile>.md``)."""
    from driftlib.phases.collaboration import plots

    out_dir = Path(out_dir)
    table = collect_drift(drift_files)
    table["condition"] = [run_condition(p, plain, prevention) for p in table["profile"]]
    write_table(table, out_dir / "drift.parquet", metadata={"producer": "collab_summary"})
    write_table(table, out_dir / "drift.csv")
    results = [read_json(p) for p in drift_files]
    plots.collab_drift(table, out_dir / "drift.png")
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
               "drift": main[["pairing", "agent", "condition", "drift", "drift_lo", "drift_hi", "p_value"]]
               .to_dict(orient="records"),
               "significant_at_0.05": int((main["p_value"] < 0.05).sum()), "tests": int(len(main))}
    write_json(summary, out_dir / "collab_summary.json")
    return table
