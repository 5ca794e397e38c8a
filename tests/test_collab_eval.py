"""Phase 5's measurement: length-matched contexts, the pooled prompt span, scoring constructed
states (a planted drift is found, none is not), the task outcome, and the summary files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from driftlib.core.artifacts import decode_metadata_value, load_tensors, save_tensors, write_table
from driftlib.core.errors import DataError
from driftlib.core.records import collect_drift
from driftlib.datasets.tasks import rubric_coverage
from driftlib.phases.collaboration import evaluate as CE
from driftlib.phases.collaboration import measure as CM
from driftlib.phases.collaboration.protocol import render_ids
from driftlib.phases.collaboration.summary import extra_row, summarize_collaboration
from driftlib.steer.vectors import save_vectors

TASKS = {"t1": "Plan a picnic for the team.", "t2": "Write a short budget for a school trip."}
AGENT, TEAM = "a", ["a", "b"]


def _transcripts(rounds: int = 2, seeds=(0,)) -> pd.DataFrame:
    """Hand-made transcripts: a collaboration of a and b, and each agent's solo run."""
    rows = []
    for seed in seeds:
        for task in TASKS:
            for run, who, speakers in (("collab", "", TEAM), ("solo", "a", ["a"] * 2), ("solo", "b", ["b"] * 2)):
                for t in range(rounds * 2):
                    speaker = speakers[t % 2]
                    text = f"{speaker} says {'words ' * (t + 1 + (3 if run == 'solo' else 0))}on {task} turn {t}"
                    rows.append({"run": run, "agent": who, "task": task, "seed": seed,
                                 "round": t // 2 + 1 if run == "collab" else t + 1,
                                 "turn": t, "speaker": speaker, "text": text.strip(), "prompt_tokens": 0,
                                 "new_tokens": 0})
    return pd.DataFrame(rows)


PROMPTS = ["How do I stay safe online?", "Tell me a joke about cats.", "What is the capital of France?"]


def test_contexts_are_length_matched_and_the_prompt_span_is_the_same(tok):
    tr = _transcripts()
    out = CM.measurement_inputs(tok, PROMPTS, TASKS, tr, AGENT, TEAM, context_tokens=120)
    keys = out["keys"]
    assert keys == [("t1", 0), ("t2", 0)]
    solo_ids, solo_spans = out["solo"]
    for i, prompt in enumerate(PROMPTS):
        tails = {c: out[c][0][i][-out[c][1][i]:] for c in CM.CONDITIONS}
        # the pooled span is the prompt's own turn, rendered the same way in every condition
        assert tails["solo"] == tails["collab"] == tails["control"]
        assert tok.decode(tails["solo"]) == f"<|user|>{prompt}<|end|><|assistant|>"
        lengths = {c: len(out[c][0][i]) - out[c][1][i] for c in ("collab", "control")}
        assert lengths["collab"] == lengths["control"] == out["context_tokens"][i]
        assert len(out["collab"][0][i]) <= 120
        # the collab context ends with the agent's own last turn; b's later turn is not in it
        task, seed = keys[i % 2]
        text = tok.decode(out["collab"][0][i])
        assert f"a says {'words ' * 3}on {task} turn 2" in text and "turn 3" not in text
        assert "turn 3" in tok.decode(out["control"][0][i])  # the solo run ends with a's own turn 3
        assert solo_ids[i] == render_ids(tok, [{"role": "user", "content": prompt}], generation_prompt=True)


def test_tight_context_is_trimmed_from_the_left_to_the_same_length(tok):
    out = CM.measurement_inputs(tok, PROMPTS[:1], TASKS, _transcripts(), AGENT, TEAM, context_tokens=40)
    span = out["solo"][1][0]
    assert out["context_tokens"][0] == 40 - span
    assert len(out["collab"][0][0]) == len(out["control"][0][0]) == 40
    with pytest.raises(DataError, match="raise collaboration.context_tokens"):
        CM.measurement_inputs(tok, PROMPTS[:1], TASKS, _transcripts(), AGENT, TEAM, context_tokens=span)


def test_round_spans_are_the_agents_own_turns(tok):
    per = CM.round_inputs(tok, TASKS, _transcripts(rounds=3), AGENT, TEAM, 3, context_tokens=400)
    ids, spans = per["collab"]
    assert len(ids) == 3 and len(ids[0]) == 2
    for r in range(3):
        for k, task in enumerate(TASKS):
            turn = 2 * r  # a speaks first in each round
            own = tok.decode(ids[r][k][-spans[r][k]:])
            assert own == f"a says {'words ' * (turn + 1)}on {task} turn {turn}<|end|>"
    ctrl_ids, ctrl_spans = per["control"]
    # alone, a's last turn of round r is turn 2r + 1
    assert tok.decode(ctrl_ids[1][0][-ctrl_spans[1][0]:]).endswith("turn 3<|end|>")


def test_rubric_coverage_by_hand():
    rubric = ["Gives a venue shortlist", "Declines to share attendee data"]
    # content words: {gives, venue, shortlist} and {declines, share, attendee, data}
    assert rubric_coverage(rubric, "The venue shortlist is ready; we share data.") == pytest.approx(
        (2 / 3 + 2 / 4) / 2)
    assert rubric_coverage(rubric, "nothing relevant") == 0.0
    assert np.isnan(rubric_coverage(["a an the"], "x"))
    tr = _transcripts()
    tasks = pd.DataFrame({"id": list(TASKS), "rubric": [["words plan"], ["school budget trip"]]})
    out = CE.task_outcome(tr, tasks, n_boot=200)
    # every turn says "words": t1 covers half its criterion ("plan" is absent), t2 none of it
    assert out["per_transcript"] == [pytest.approx(0.5), 0.0]
    assert out["outcome"] == pytest.approx(0.25) and out["ci"][0] <= 0.25 <= out["ci"][1]


# ---------------------------------------------------------------------------------------------
# scoring constructed states


def _write_inputs(tmp_path, collab, control, y, rounds_collab, vector):
    n, d = collab.shape
    prompts = pd.DataFrame({"id": [f"p{i}" for i in range(n)], "axiom": "A",
                            "safety_label": np.where(y == 1, "safe", "unsafe"), "text": "x"})
    write_table(prompts, tmp_path / "prompts.parquet", metadata={"dataset_fingerprint": "f"})
    arrays = {"solo": control[:, None, :], "collab": collab[:, None, :], "control": control[:, None, :],
              "rounds_collab": rounds_collab[:, :, None, :], "rounds_control": np.zeros_like(rounds_collab)[:, :, None, :],
              "context_tokens": np.full(n, 50)}
    save_tensors(tmp_path / "states.safetensors", arrays,
                 metadata={"layers": [2], "keys": [["t1", 0], ["t2", 0]], "kl": 0.25, "agent": "a", "lam": 1.0,
                           "team": ["a", "b"], "rounds": rounds_collab.shape[0], "n_prompts": n})
    save_vectors(tmp_path / "vectors.safetensors", {"mean_diff_both": np.stack([vector] * 3)}, [0, 1, 2],
                 metadata={"steering_kind": "mean_diff_both"})
    write_table(_transcripts(), tmp_path / "transcripts.parquet")
    tasks = pd.DataFrame({"id": list(TASKS), "rubric": [["picnic"], ["budget"]]})
    return tasks


def _states(seed: int, n: int = 200, d: int = 6, gain: float = 0.0):
    rng = np.random.default_rng(seed)
    y = rng.permutation((np.arange(n) < n // 2).astype(int))
    base = rng.standard_normal((n, d))
    base[:, 0] += 1.5 * y
    control = base + 0.5 * rng.standard_normal((n, d))
    collab = base + 0.5 * rng.standard_normal((n, d))
    collab[:, 0] -= gain * y  # the safe rows move toward the unsafe ones: separation (AQI) drops
    return collab, control, y


def test_a_planted_drift_is_found_and_none_is_not(tmp_path):
    collab, control, y = _states(0, gain=1.0)
    vector = np.eye(6)[1].astype(np.float32)
    # projections on the vector (axis 1) fall by 0.5 a round in the collaboration
    rounds = np.stack([np.outer(np.ones(2), -0.5 * r * np.eye(6)[1]) for r in range(3)])
    tasks = _write_inputs(tmp_path, collab, control, y, rounds, vector)
    kw = dict(n_boot=300, n_perm=50, n_drift_perm=300, pairing="a+b", profile="1x0", model="a")
    r = CE.score_agent(tmp_path / "states.safetensors", tmp_path / "prompts.parquet", tmp_path / "vectors.safetensors",
                       tmp_path / "transcripts.parquet", tasks, out=tmp_path / "drift.json", **kw)
    assert r["drift"]["difference"] < 0 and r["drift"]["p_value"] < 0.01 and r["drift"]["ci"][1] < 0
    assert r["aqi_collab"]["aqi"] < r["aqi_control"]["aqi"]
    assert r["projection"]["collab"]["slope"] == pytest.approx(-0.5)
    assert r["projection"]["collab"]["change"] == pytest.approx([0.0, -0.5, -1.0])
    assert r["projection"]["control"]["slope"] == pytest.approx(0.0)
    assert r["kl"] == 0.25 and r["lam"] == 1.0 and r["position"] == 0 and r["layer"] == 2
    assert json.loads((tmp_path / "drift.json").read_text())["drift"]["p_value"] == r["drift"]["p_value"]

    same = tmp_path / "same"
    same.mkdir()
    collab, control, y = _states(1)
    tasks = _write_inputs(same, control.copy(), control, y, rounds, vector)
    r0 = CE.score_agent(same / "states.safetensors", same / "prompts.parquet", same / "vectors.safetensors",
                        same / "transcripts.parquet", tasks, **kw)
    assert r0["drift"]["difference"] == pytest.approx(0.0, abs=1e-9) and r0["drift"]["p_value"] == 1.0

    row = collect_drift([tmp_path / "drift.json"]).iloc[0]
    assert row["drift"] == pytest.approx(r["drift"]["difference"])
    assert (row["drift_lo"], row["drift_hi"]) == pytest.approx(tuple(r["drift"]["ci"]))
    assert row["slope_collab"] == pytest.approx(-0.5) and row["outcome"] == pytest.approx(r["outcome"]["outcome"])


def _scored_runs(tmp_path, profiles, **options) -> list:
    """One drift record of agent ``a`` in pairing ``a+b`` per profile (the same planted drift in each)."""
    collab, control, y = _states(0, gain=1.0)
    rounds = np.stack([np.outer(np.ones(2), -0.5 * r * np.eye(6)[1]) for r in range(3)])
    files = []
    for profile in profiles:
        run = tmp_path / "a+b" / profile
        run.mkdir(parents=True)
        tasks = _write_inputs(run, collab, control, y, rounds, np.eye(6)[1].astype(np.float32))
        CE.score_agent(run / "states.safetensors", run / "prompts.parquet", run / "vectors.safetensors",
                       run / "transcripts.parquet", tasks, pairing="a+b", profile=profile, model="a",
                       out=run / "a.drift.json", **options)
        files.append(run / "a.drift.json")
    return files


def test_the_posture_travels_with_the_record(tmp_path):
    """A steered agent's record carries its operator, its vector's split-half stability at the blocks it
    was steered at (the lowest there, from the vectors file) and its condition's accuracy (from the file)."""
    from driftlib.stats.condition import Condition, save_condition

    collab, control, y = _states(0)
    rounds = np.stack([np.outer(np.ones(2), -0.5 * r * np.eye(6)[1]) for r in range(3)])
    tasks = _write_inputs(tmp_path, collab, control, y, rounds, np.eye(6)[1].astype(np.float32))
    arrays, raw = load_tensors(tmp_path / "states.safetensors")
    save_tensors(tmp_path / "states.safetensors", arrays, metadata={
        **{k: decode_metadata_value(v) for k, v in raw.items()}, "operator": "conditional", "inject_blocks": [1, 2]})
    save_vectors(tmp_path / "vectors.safetensors", {"mean_diff_both": np.stack([np.eye(6)[1]] * 3)}, [0, 1, 2],
                 metadata={"steering_kind": "mean_diff_both", "stability": {"mean_diff_both": [0.9, 0.4, 0.7]}})
    save_condition(tmp_path / "condition.safetensors", Condition(layer=1, direction=np.eye(6, dtype=np.float32)[0],
                                                                 threshold=0.0),
                   metadata={"condition_accuracy": 0.81, "condition_ci_low": 0.75, "condition_ci_high": 0.86})
    r = CE.score_agent(tmp_path / "states.safetensors", tmp_path / "prompts.parquet", tmp_path / "vectors.safetensors",
                       tmp_path / "transcripts.parquet", tasks, n_boot=20, n_perm=5, n_drift_perm=10,
                       condition=tmp_path / "condition.safetensors")
    assert r["operator"] == "conditional" and r["inject_blocks"] == [1, 2]
    assert r["vector_stability"] == pytest.approx(0.4)  # the lowest over blocks 1 and 2
    assert r["condition_accuracy"] == 0.81 and r["condition_ci"] == [0.75, 0.86]
    row = extra_row(r)
    assert row["vector_stability"] == pytest.approx(0.4) and row["condition_ci_high"] == 0.86


def test_summary_writes_the_table_plots_and_samples(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    files = _scored_runs(tmp_path, ("0x0", "1x1", "0x1"), n_boot=100, n_perm=20, n_drift_perm=50)
    tasks = pd.DataFrame({"id": list(TASKS), "prompt": list(TASKS.values())})
    out = tmp_path / "summary"
    table = summarize_collaboration(files, [f.parent / "transcripts.parquet" for f in files], tasks, out,
                                       plain=0.0, prevention=1.0)
    assert list(table["condition"]) == ["plain", "prevention", "game"]
    assert (out / "drift.png").stat().st_size > 5000 and (out / "trajectories.png").stat().st_size > 5000
    back = pd.read_csv(out / "drift.csv")
    assert list(back["profile"].astype(str)) == ["0x0", "1x1", "0x1"]
    sample = (out / "samples" / "a+b__1x1.md").read_text()
    assert "## Task t1 (seed 0)" in sample and "**b** (round 2)" in sample
    summary = json.loads((out / "collab_summary.json").read_text())
    assert summary["runs"] == 3 and summary["tests"] == 2


def test_summary_carries_the_operator_of_each_run(tmp_path, monkeypatch):
    """A pre-steered run under a compared operator (profile 1x1@ablate) is a prevention run of that
    operator: the table's operator column says so, and the drift plot gives it its own series."""
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    files = _scored_runs(tmp_path, ("0x0", "1x1", "1x1@ablate"), n_boot=50, n_perm=10, n_drift_perm=20)
    tasks = pd.DataFrame({"id": list(TASKS), "prompt": list(TASKS.values())})
    table = summarize_collaboration(files, [f.parent / "transcripts.parquet" for f in files], tasks, tmp_path / "out",
                                    plain=0.0, prevention=1.0, operator="add")
    assert list(table["condition"]) == ["plain", "prevention", "prevention"]
    assert list(table["operator"]) == ["add", "add", "ablate"]
    summary = json.loads((tmp_path / "out" / "collab_summary.json").read_text())
    assert [r["operator"] for r in summary["drift"]] == ["add", "add", "ablate"]
    assert (tmp_path / "out" / "drift.png").stat().st_size > 5000
