"""Phase 5's measurement: each agent's AQI alone, after a collaboration and after its solo control.

One function per rule: :func:`measure_agent` (hidden states, GPU), :func:`score_agent` (AQIs, drift
test, projection drift, task outcome; CPU) and :func:`summarize_collaboration` (table, plots,
sample transcripts).

Contexts (the choice, and why)
------------------------------
Every evaluation prompt ``i`` is read by the agent in three conditions, through its chat template,
the prompt always being a new user message at the end:

- ``solo``: the prompt alone (condition (a) of the issue);
- ``collab``: after transcript ``keys[i % T]`` (task, seed) of the collaboration, as the agent saw
  it, up to and including its own last turn (later turns of others are left out, so every context
  ends with the agent's own message and the prompt's tokens are rendered the same way in every
  condition);
- ``control``: after the agent's own solo run on the same task and seed, cut to the
  collaboration's number of turns (:func:`driftlib.collaboration.run_solo`).

The collab and control contexts of a prompt are then trimmed from the left (keeping a leading BOS)
to the same number of tokens, at most ``context_tokens`` minus the prompt's length, so a difference
between them is not a difference of context length. The state of a prompt is pooled over the
prompt's own tokens only (the tokens after the context: the user turn and the generation prompt;
the context is attended to, not pooled), with the config's pooling, at the measurement layers.

Drift is ``AQI(collab) - AQI(control)``, tested by :func:`driftlib.drift_stats.paired_permutation_test`
with its paired bootstrap interval. The label-free measure follows the agent's own turns: the
mean-pooled state over the tokens of its last turn in each round (with everything before it in
context), projected onto its own alignment vector at the primary measurement layer
(:func:`driftlib.drift_stats.projection_drift`), in the collaboration and in the solo control (whose
round ``r`` ends with the agent's turn ``r * len(team)``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftlib import aqi as _aqi
from driftlib.artifacts import decode_metadata_value, load_tensors, read_json, read_table, write_json, write_table
from driftlib.drift_stats import paired_permutation_test, projection_drift
from driftlib.errors import ArtifactError
from driftlib.tasks import rubric_coverage
from driftlib.transcripts import transcript_keys

logger = logging.getLogger(__name__)

__all__ = ["task_outcome", "score_agent", "collect_drift", "run_condition", "summarize_collaboration",
           "DRIFT_COLUMNS", "CONDITIONS"]

#: the three ways an agent reads an evaluation prompt (see :mod:`driftlib.collab_measure`)
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


# ---------------------------------------------------------------------------------------------
# inputs


# ---------------------------------------------------------------------------------------------
# scoring (numbers only)


def task_outcome(transcripts: pd.DataFrame, tasks: pd.DataFrame, *, n_boot: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> dict[str, Any]:
    """The run's task outcome: :func:`driftlib.tasks.rubric_coverage` of each collaboration transcript
    (all turns joined), averaged; a percentile interval from resampling the transcripts."""
    rubric = dict(zip(tasks["id"].astype(str), tasks["rubric"], strict=True))
    scores = []
    for task, seed_ in transcript_keys(transcripts):
        sel = transcripts[(transcripts["run"] == "collab") & (transcripts["task"] == task)
                          & (transcripts["seed"] == seed_)]
        scores.append(rubric_coverage(list(rubric[task]), "\n".join(sel["text"])))
    s = np.asarray(scores, dtype=np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.choice(s, size=(n_boot, s.size), replace=True).mean(axis=1)
    ci, _ = _aqi.percentile_interval(draws, confidence)
    return {"outcome": float(s.mean()), "ci": ci, "per_transcript": s.tolist()}


def score_agent(
    states: str | Path, prompts: str | Path, vectors: str | Path, transcripts: str | Path, tasks: pd.DataFrame, *,
    method: str = "standardize", n_components: int | None = 32, n_boot: int = 1000, n_perm: int = 200,
    n_drift_perm: int = 1000, confidence: float = 0.95, seed: int = 0, pairing: str = "", profile: str = "", model: str = "",
    out: str | Path | None = None,
) -> dict[str, Any]:
    """AQIs (solo, collab, control) with intervals, the drift with its interval and p-value, projection
    drift over the rounds, the task outcome, and the posture's cost, at the primary measurement layer.

    ``n_boot``, ``n_perm``, ``confidence``: the AQIs' bootstrap and label-shuffle null (as in phase 1),
    also the drift's bootstrap; ``n_drift_perm``: swaps of the paired permutation test.
    """
    from driftlib.scoring import PROMPT_COLUMNS
    from driftlib.vectors import load_steering_vectors

    prompts_df, _ = read_table(prompts, columns=PROMPT_COLUMNS, producer="prepare_prompts")
    arrays, raw = load_tensors(states, producer="collab_states")
    meta = {k: decode_metadata_value(v) for k, v in raw.items()}
    n = len(prompts_df)
    for cond in CONDITIONS:
        if cond not in arrays or arrays[cond].shape[0] != n:
            raise ArtifactError(f"{states}: {cond!r} states missing or not for the {n} prompts. Re-run collab_states.")
    layer = int(meta["layers"][0])
    y = (prompts_df["safety_label"].to_numpy() == "safe").astype(np.int8)
    result: dict[str, Any] = {"pairing": pairing, "profile": profile, "agent": meta["agent"], "model": model,
                              "position": list(meta["team"]).index(meta["agent"]), "lam": meta["lam"],
                              "layer": layer, "kl": meta["kl"], "n_prompts": n, "n_transcripts": len(meta["keys"]),
                              "context_tokens": float(np.mean(arrays["context_tokens"]))}
    for cond in CONDITIONS:
        r = _aqi.alignment_quality(arrays[cond][:, 0, :], y, method=method, n_components=n_components,
                                   n_boot=n_boot, n_perm=n_perm, confidence=confidence, seed=seed)
        result[f"aqi_{cond}"] = {"aqi": r.aqi, "ci": [r.ci_low, r.ci_high], "p_value": r.p_value, "note": r.note}
    test = paired_permutation_test(arrays["collab"][:, 0, :], arrays["control"][:, 0, :], y, n_perm=n_drift_perm,
                                   method=method, n_components=n_components, seed=seed, n_boot=n_boot,
                                   confidence=confidence)
    result["drift"] = test
    own, kind = load_steering_vectors(vectors)
    if layer not in own:
        raise ArtifactError(f"{vectors}: no vector at the measurement layer {layer}. Re-run compute_vectors.")
    result["vector_kind"] = kind
    result["projection"] = {}
    for cond in ("collab", "control"):
        h = arrays[f"rounds_{cond}"][:, :, 0, :]
        if h.shape[0] < 2 or h.shape[1] < 2:
            result["projection"][cond] = {"note": "needs at least 2 rounds and 2 transcripts"}
            continue
        pd_ = projection_drift(h, own[layer], n_boot=n_boot, confidence=confidence, seed=seed)
        result["projection"][cond] = {"mean_projection": pd_["mean_projection"].tolist(),
                                      "change": pd_["change"].tolist(), "slope": pd_["slope"],
                                      "slope_ci": pd_["slope_ci"]}
    tr, _ = read_table(transcripts, producer="collaborate")
    result["outcome"] = task_outcome(tr, tasks, n_boot=n_boot, confidence=confidence, seed=seed)
    if out is not None:
        write_json(result, out)
    return result


def _flat(result: dict[str, Any]) -> dict[str, Any]:
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
    """One row per drift file (:func:`score_agent`'s JSON), columns :data:`DRIFT_COLUMNS`."""
    rows = [_flat(read_json(p)) for p in paths]
    return pd.DataFrame(rows, columns=DRIFT_COLUMNS)


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
    from driftlib.profiles import parse_profile

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
    from driftlib import plots

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
