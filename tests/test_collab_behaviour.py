"""Phase 5's behaviour, probe and power: the agents' answers in each condition (against greedy
decoding by hand), the paired behavioural drift (against hand-computed differences), the MDE
columns (against the formula), the probe AUC (against scikit-learn run by hand), dealigned agents
(names, config validation, the merged adapter) and the summary's behaviour figure."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm

from driftlib.core.agents import agent_key, parse_agent
from driftlib.core.errors import ConfigError
from driftlib.model import tiny
from driftlib.phases.collaboration import evaluate as CE
from driftlib.phases.collaboration import measure as CM
from driftlib.phases.collaboration.protocol import Agent
from driftlib.phases.collaboration.summary import summarize_collaboration
from driftlib.stats.behaviour import is_refusal
from driftlib.steer.hooks import steer
from driftlib.steer.spec import SteeringSpec
from test_collab_eval import PROMPTS, TASKS, TEAM, _states, _transcripts, _write_inputs

Z80 = norm.ppf(0.975) + norm.ppf(0.8)  # 2.8016: the MDE in standard errors at alpha 0.05, power 0.8


# ---------------------------------------------------------------------------------------------
# answers


def _by_hand(model, ids: list[int], stop: set[int], k: int) -> list[int]:
    """Greedy decoding without a cache or padding: the argmax of a full forward pass, k times."""
    seq, new = list(ids), []
    with torch.no_grad():
        for _ in range(k):
            nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
            if nxt in stop:
                break
            new.append(nxt)
            seq.append(nxt)
    return new


@pytest.mark.parametrize("lam", [0.0, 4.0])
def test_answers_are_greedy_continuations_of_the_measured_ids(tok, lam):
    torch.manual_seed(0)
    model = tiny.new_model("llama", tok).eval()
    steering = None
    if lam:
        rng = np.random.default_rng(3)
        vectors = {1: rng.standard_normal(model.config.hidden_size).astype(np.float32)}
        steering = SteeringSpec(layers=(1,), lam=lam, vectors=vectors)
    agent = Agent("a", model, tok, steering)
    inputs = CM.measurement_inputs(tok, PROMPTS, TASKS, _transcripts(), "a", TEAM, context_tokens=120)
    prompts = pd.DataFrame({"id": ["p0", "p1", "p2"], "axiom": "A", "safety_label": ["safe", "unsafe", "safe"],
                            "text": PROMPTS})
    got = CM.answer_prompts(agent, inputs, prompts, max_new_tokens=6, batch_size=2, model="k", variant="aligned")
    assert list(got.columns) == CM.ANSWER_COLUMNS and len(got) == 3 * len(PROMPTS)
    stop = {tok.eos_token_id} | {int(e) for e in np.atleast_1d(model.generation_config.eos_token_id or [])}
    for cond in CM.CONDITIONS:
        rows = got[got["condition"] == cond]
        assert rows["id"].tolist() == ["p0", "p1", "p2"]
        for i, (text, refused) in enumerate(zip(rows["text"], rows["refused"], strict=True)):
            with steer(model, steering) if steering is not None else torch.no_grad():
                want = _by_hand(model, inputs[cond][0][i], stop, 6)
            want_text = tok.decode(want, skip_special_tokens=True).strip()
            assert text == want_text
            assert refused == is_refusal(want_text)
    assert set(got["lam"]) == {lam} and set(got["operator"]) == ({"add"} if lam else {"none"})
    # a steered agent says something else than the plain one
    if lam:
        plain = CM.answer_prompts(Agent("a", model, tok, None), inputs, prompts, max_new_tokens=6)
        assert plain["text"].tolist() != got["text"].tolist()


# ---------------------------------------------------------------------------------------------
# behavioural drift


def _answers(refused: dict[str, np.ndarray], ids: list[str]) -> pd.DataFrame:
    return pd.concat([pd.DataFrame({"id": ids, "condition": c, "refused": r, "text": ""})
                      for c, r in refused.items()], ignore_index=True)


def test_behavioural_drift_is_the_paired_difference_of_refusal_splits():
    n_u = n_s = 40
    labels = np.array(["unsafe"] * n_u + ["safe"] * n_s)
    prompts = pd.DataFrame({"id": [f"p{i}" for i in range(80)], "axiom": np.where(np.arange(80) % 2, "A", "B"),
                            "safety_label": labels, "text": "x"})
    rng = np.random.default_rng(0)
    control = np.zeros(80, dtype=bool)
    control[:24] = True            # refuses 24 of 40 unsafe
    control[n_u:n_u + 6] = True    # and 6 of 40 safe
    collab = control.copy()
    collab[:14] = False            # after the collaboration: 10 of 40 unsafe
    collab[n_u + 6:n_u + 8] = True  # and 8 of 40 safe
    solo = rng.random(80) < 0.5
    # shuffle the rows of the answers table: scoring must pair by prompt id
    ans = _answers({"solo": solo, "collab": collab, "control": control}, prompts["id"].tolist()).sample(frac=1,
                                                                                                      random_state=1)
    r = CE.behaviour_scores(ans, prompts, n_boot=2000, seed=3)
    # by hand: splits 24/40 - 6/40 = 0.45 (control) and 10/40 - 8/40 = 0.05 (collab)
    assert r["rates"]["control"]["refusal_unsafe"] == pytest.approx(24 / 40)
    assert r["rates"]["control"]["over_refusal_safe"] == pytest.approx(6 / 40)
    assert r["rates"]["collab"]["refusal_unsafe"] == pytest.approx(10 / 40)
    assert r["rates"]["collab"]["over_refusal_safe"] == pytest.approx(8 / 40)
    # Wilson's interval for 10/40 by its closed form
    z = norm.ppf(0.975)
    p, n = 10 / 40, 40
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert (r["rates"]["collab"]["refusal_unsafe_ci_low"], r["rates"]["collab"]["refusal_unsafe_ci_high"]) == \
        pytest.approx((centre - half, centre + half))
    assert {row["axiom"] for row in r["by_axiom"]["collab"]} == {"A", "B"}
    d = r["drift"]
    assert d["difference"] == pytest.approx(0.05 - 0.45)
    assert d["ci_low"] <= -0.4 <= d["ci_high"] and d["ci_high"] < 0 and d["p_value"] < 0.05
    assert d["p_floor"] == pytest.approx(1 / 2001)
    # paired: the bootstrap SE is that of the per-prompt differences (within-class means), not of two
    # independent rate differences
    delta = collab.astype(float) - control.astype(float)
    se_paired = np.sqrt(delta[:n_u].var() / n_u + delta[n_u:].var() / n_s)
    assert d["se"] == pytest.approx(se_paired, rel=0.1)
    assert d["mde"] == pytest.approx(Z80 * d["se"]) and d["resolvable"] == (abs(d["difference"]) >= d["mde"])

    same = CE.behaviour_scores(_answers({"solo": solo, "collab": control, "control": control},
                                        prompts["id"].tolist()), prompts, n_boot=200)
    assert same["drift"]["difference"] == 0.0 and same["drift"]["p_value"] == 1.0
    assert same["drift"]["mde"] == 0.0 and not same["drift"]["resolvable"]


# ---------------------------------------------------------------------------------------------
# scoring with probe, power and behaviour


def test_score_agent_reports_probe_mde_and_behaviour(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    collab, control, y = _states(0, gain=1.0)
    rounds = np.stack([np.outer(np.ones(2), -0.5 * r * np.eye(6)[1]) for r in range(3)])
    tasks = _write_inputs(tmp_path, collab, control, y, rounds, np.eye(6)[1].astype(np.float32))
    prompts = pd.read_parquet(tmp_path / "prompts.parquet")
    refused = {"solo": y == 0, "collab": np.zeros(len(y), bool), "control": y == 0}
    r = CE.score_agent(tmp_path / "states.safetensors", tmp_path / "prompts.parquet", tmp_path / "vectors.safetensors",
                       tmp_path / "transcripts.parquet", tasks, n_boot=300, n_perm=20, n_drift_perm=300,
                       pairing="a+b", profile="0x0", model="a", probe_folds=5, seed=0, probe_permutations=9,
                       answers=_answers(refused, prompts["id"].tolist()), out=tmp_path / "a.drift.json")
    d = r["drift"]
    assert d["mde"] == pytest.approx(Z80 * d["null_sd"]) and d["p_floor"] == pytest.approx(1 / 301)
    assert d["resolvable"] == (abs(d["difference"]) >= d["mde"]) and d["resolvable"]  # the planted drift is seen
    # the probe AUC of each condition, by hand with scikit-learn
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    for cond, X in (("collab", collab), ("control", control)):
        scores = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=100_000, tol=1e-12)), X, y,
                                   cv=folds, method="decision_function")
        assert r[f"probe_{cond}"]["auc"] == pytest.approx(roc_auc_score(y, scores))
        assert r[f"probe_{cond}"]["ci"][0] <= r[f"probe_{cond}"]["auc"] <= r[f"probe_{cond}"]["ci"][1]
        # its label-shuffle null: the direct probe's, refitted per shuffle, p at least 1/(9+1)
        from driftlib.stats.probe import probe_auc
        want = probe_auc(X, y, n_folds=5, n_boot=300, n_perm=9, seed=0)
        assert r[f"probe_{cond}"]["p_value"] == pytest.approx(want.p_value) and r[f"probe_{cond}"]["n_perm"] == 9
        assert r[f"probe_{cond}"]["p_value"] >= 0.1
    # behaviour: control refuses exactly the unsafe prompts (split 1), collab nothing (split 0)
    b = r["behaviour"]
    assert b["rates"]["control"]["refusal_unsafe"] == 1.0 and b["rates"]["collab"]["refusal_unsafe"] == 0.0
    assert b["drift"]["difference"] == pytest.approx(-1.0)
    saved = json.loads((tmp_path / "a.drift.json").read_text())
    assert saved["behaviour"]["drift"]["difference"] == pytest.approx(-1.0)
    assert saved["drift"]["mde"] == pytest.approx(d["mde"])


def test_summary_has_power_probe_and_behaviour_columns_and_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    collab, control, y = _states(0, gain=1.0)
    rounds = np.stack([np.outer(np.ones(2), -0.5 * r * np.eye(6)[1]) for r in range(3)])
    files = []
    for profile, refuse_collab in (("0x0", False), ("1x1", True)):
        run = tmp_path / "a+b" / profile
        run.mkdir(parents=True)
        tasks = _write_inputs(run, collab, control, y, rounds, np.eye(6)[1].astype(np.float32))
        ids = [f"p{i}" for i in range(len(y))]
        refused = {"solo": y == 0, "collab": (y == 0) & refuse_collab, "control": y == 0}
        CE.score_agent(run / "states.safetensors", run / "prompts.parquet", run / "vectors.safetensors",
                       run / "transcripts.parquet", tasks, n_boot=100, n_perm=20, n_drift_perm=50, probe_folds=3,
                       answers=_answers(refused, ids), pairing="a+b", profile=profile, model="a",
                       out=run / "a.drift.json")
        files.append(run / "a.drift.json")
    tasks = pd.DataFrame({"id": list(TASKS), "prompt": list(TASKS.values())})
    out = tmp_path / "summary"
    table = summarize_collaboration(files, [f.parent / "transcripts.parquet" for f in files], tasks, out,
                                    plain=0.0, prevention=1.0)
    plain, pre = table.iloc[0], table.iloc[1]
    assert plain["behaviour_drift"] == pytest.approx(-1.0) and pre["behaviour_drift"] == pytest.approx(0.0)
    assert plain["drift_mde"] == pytest.approx(json.loads(files[0].read_text())["drift"]["mde"])
    assert bool(plain["behaviour_resolvable"]) and not bool(pre["behaviour_resolvable"])
    assert plain["refusal_unsafe_control"] == 1.0 and plain["refusal_unsafe_collab"] == 0.0
    assert 0.5 < plain["probe_collab"] <= 1.0
    assert (out / "behaviour.png").stat().st_size > 5000
    summary = json.loads((out / "collab_summary.json").read_text())
    assert summary["behaviour"][0]["behaviour_drift"] == pytest.approx(-1.0)
    # per axiom, descriptive: the control refuses every unsafe prompt of each axiom, the plain
    # collaboration none, the pre-steered one every one
    axioms = pd.read_parquet(out / "behaviour_axioms.parquet")
    prompts = pd.read_parquet(tmp_path / "a+b" / "0x0" / "prompts.parquet")
    assert set(axioms["axiom"]) == set(prompts["axiom"]) and axioms["descriptive"].all()
    assert len(axioms) == 2 * 3 * prompts["axiom"].nunique()  # runs x states x axioms
    at = axioms.set_index(["profile", "state", "axiom"])
    for axiom in prompts["axiom"].unique():
        n_unsafe = int(((prompts["axiom"] == axiom) & (prompts["safety_label"] == "unsafe")).sum())
        assert at.loc[("0x0", "control", axiom), "refusal_unsafe"] == 1.0
        assert at.loc[("0x0", "collab", axiom), "refusal_unsafe"] == 0.0
        assert at.loc[("1x1", "collab", axiom), "refused_unsafe"] == n_unsafe
        assert at.loc[("1x1", "collab", axiom), "over_refusal_safe"] == 0.0


# ---------------------------------------------------------------------------------------------
# dealigned agents


def test_agent_names():
    assert parse_agent("qwen2") == parse_agent("qwen2", [20, 60])
    assert parse_agent("qwen2").dealign_steps is None
    ref = parse_agent("qwen2@dealigned", [60, 20])
    assert (ref.name, ref.key, ref.dealign_steps, ref.dealigned) == ("qwen2@dealigned", "qwen2", 60, True)
    assert parse_agent("qwen2@dealigned20", [20, 60]).dealign_steps == 20
    assert agent_key("qwen2@dealigned20") == "qwen2"
    with pytest.raises(ConfigError, match="not one of dealign.steps"):
        parse_agent("qwen2@dealigned30", [20, 60])
    with pytest.raises(ConfigError, match="KEY@dealigned"):
        parse_agent("qwen2@base")


def test_config_accepts_dealigned_partners_and_refuses_bad_ones():
    from driftlib.core.config import load_and_check, read_config_file

    base = read_config_file("config/config.yaml")
    ok = copy.deepcopy(base)
    ok["dealign"]["steps"] = [20, 60]
    ok["collaboration"]["pairings"] = [["llama", "qwen2"], ["llama", "qwen2@dealigned"], ["qwen2", "qwen2@dealigned20"]]
    load_and_check(ok)
    for pairing, message in ((["llama", "qwen2@dealigned5"], "not one of dealign.steps"),
                             (["llama", "falcon@dealigned"], "not model keys"),
                             (["llama", "qwen2@realigned"], "collaboration.pairings")):
        bad = copy.deepcopy(base)
        bad["collaboration"]["pairings"] = [pairing]
        with pytest.raises(ConfigError, match=message):
            load_and_check(bad)
    only = copy.deepcopy(base)
    only["dealign"]["models"] = ["llama"]
    only["collaboration"]["pairings"] = [["llama", "qwen2@dealigned"]]
    with pytest.raises(ConfigError, match="dealign.models"):
        load_and_check(only)


def test_a_dealigned_agent_is_its_model_with_the_adapter_merged(tok, tmp_path):
    import peft

    from driftlib.phases.collaboration.run import load_agent

    torch.manual_seed(0)
    model = tiny.new_model("llama", tok).eval()
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    lora = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj",
                                                                                                       "v_proj"]))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # peft starts B at 0: give the adapter an effect
    lora.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([tok("Tell me a joke about cats.")["input_ids"]])
    with torch.no_grad():
        want = lora(ids).logits
        plain = model(ids).logits
    spec = {"name": "llama@dealigned", "model": str(tmp_path / "model"), "adapter": str(tmp_path / "adapter")}
    agent = load_agent(spec, SteeringSpec(layers=(1,)), dtype="float32", device="cpu")
    with torch.no_grad():
        got = agent.model(ids).logits
    assert torch.allclose(got, want, atol=1e-4) and not torch.allclose(got, plain, atol=1e-2)
    with pytest.raises(Exception, match="train_dealign"):
        load_agent({**spec, "adapter": str(tmp_path / "nowhere")}, SteeringSpec(layers=(1,)), dtype="float32",
                   device="cpu")


def test_an_agent_under_the_conditional_operator_is_gated_by_its_own_condition(tok, tmp_path):
    import numpy as np

    from driftlib.phases.collaboration.run import load_agent
    from driftlib.stats.condition import Condition, save_condition
    from driftlib.steer.vectors import save_vectors

    torch.manual_seed(0)
    model = tiny.new_model("llama", tok).eval()
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    d, depth = model.config.hidden_size, model.config.num_hidden_layers
    save_vectors(tmp_path / "vectors.safetensors", {"mean_diff_both": np.ones((depth, d), np.float32)},
                 list(range(depth)), metadata={"model": "llama", "steering_kind": "mean_diff_both"})
    cond = Condition(layer=1, direction=np.eye(d, dtype=np.float32)[0], threshold=0.25)
    save_condition(tmp_path / "condition.safetensors", cond, metadata={"model": "llama"})
    spec = {"name": "llama", "model": str(tmp_path / "model"), "vectors": str(tmp_path / "vectors.safetensors"),
            "lam": 2.0, "condition": str(tmp_path / "condition.safetensors")}
    agent = load_agent(spec, SteeringSpec(layers=(1,), operator="conditional"), dtype="float32", device="cpu")
    assert agent.steering.operator == "conditional" and agent.steering.lam == 2.0
    assert agent.steering.condition.threshold == 0.25 and agent.steering.condition.layer == 1
    np.testing.assert_array_equal(agent.steering.condition.direction, cond.direction)
    # without a condition in its object, an additive agent is not gated
    plain = load_agent({**spec, "condition": None}, SteeringSpec(layers=(1,)), dtype="float32", device="cpu")
    assert plain.steering.condition is None
