"""Phase 6 orchestration (driftlib.phases.game.solve) on constructed phase-5 tables whose games are solved by
hand: payoff arrays, a prisoner's dilemma and a stag hunt in disguise, a 3-agent game, missing and
duplicate profiles, profile-name tolerance, the alignment-weight sweep and the written files."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from driftlib.core.errors import ConfigError, DataError
from driftlib.core.profiles import profile_name
from driftlib.phases.game.solve import (
    GAME_FILES,
    SENSITIVITY_COLUMNS,
    SUMMARY_COLUMNS,
    missing_profiles,
    payoff_inputs,
    solve_pairing,
    summarize_games,
    write_game,
)


def _rows(pairing: str, agents: list[str], profile: str, lams, outcome: float, aqis, kls) -> list[dict]:
    return [
        {
            "pairing": pairing, "profile": profile, "agent": a, "position": p, "model": f"m-{a}",
            "lam": float(lams[p]), "aqi_collab": float(aqis[p]), "aqi_collab_lo": float(aqis[p]) - 5,
            "aqi_collab_hi": float(aqis[p]) + 5, "outcome": outcome, "outcome_lo": outcome - 0.1,
            "outcome_hi": outcome + 0.1, "kl": float(kls[p]), "drift": 0.0, "p_value": 0.5,
        }
        for p, a in enumerate(agents)
    ]


def _table(agents: list[str], lambdas, fn, *, name=profile_name) -> pd.DataFrame:
    """Rows for every profile; ``fn(lams) -> (outcome, aqis, kls)``."""
    pairing = "+".join(agents)
    rows = []
    for lams in itertools.product(lambdas, repeat=len(agents)):
        outcome, aqis, kls = fn(lams)
        rows += _rows(pairing, agents, name(lams), lams, outcome, aqis, kls)
    return pd.DataFrame(rows)


# hand-built game: a, b with lambdas [0, 1]
HAND = {
    (0, 0): (0.5, (20, 30), (0.0, 0.0)),
    (0, 1): (0.6, (25, 60), (0.0, 0.1)),
    (1, 0): (0.7, (70, 35), (0.2, 0.0)),
    (1, 1): (0.9, (80, 90), (0.2, 0.1)),
}


def _hand_table() -> pd.DataFrame:
    return _table(["a", "b"], [0, 1], lambda lams: HAND[tuple(int(v) for v in lams)])


def _pd(lams):
    """Prisoner's dilemma: my steering costs me 0.2 KL, my partner's steering raises my AQI by 30."""
    s0, s1 = lams
    return 0.5, (40 + 30 * s1, 40 + 30 * s0), (0.2 * s0, 0.2 * s1)


def _stag(lams):
    """Stag hunt: the task succeeds only when both steer; steering costs 0.4 KL; AQI 0."""
    s0, s1 = lams
    return float(s0 == 1 and s1 == 1), (0, 0), (0.4 * s0, 0.4 * s1)


UNIT = {"w_outcome": 1.0, "w_alignment": 1.0, "w_cost": 1.0}


# ---------------------------------------------------------------------------------------------
# inputs


def test_payoff_inputs_and_payoffs_match_the_formula_by_hand():
    drift = _hand_table()
    inp = payoff_inputs(drift, "a+b", [0, 1])
    assert inp["players"] == ["a", "b"] and inp["lambdas"] == [0.0, 1.0]
    assert inp["profiles"] == ["0x0", "0x1", "1x0", "1x1"] and inp["missing"] == []
    np.testing.assert_allclose(inp["outcome"], [[0.5, 0.6], [0.7, 0.9]])
    np.testing.assert_allclose(inp["outcome_lo"], [[0.4, 0.5], [0.6, 0.8]])
    np.testing.assert_allclose(inp["alignment"], [[[0.2, 0.3], [0.25, 0.6]], [[0.7, 0.35], [0.8, 0.9]]])
    np.testing.assert_allclose(inp["alignment_hi"], inp["alignment"] + 0.05)
    np.testing.assert_allclose(inp["cost"], [[[0, 0], [0, 0.1]], [[0.2, 0], [0.2, 0.1]]])

    # payoff = 1 * outcome + 2 * AQI/100 - 3 * KL, by hand
    res = solve_pairing(drift, "a+b", [0, 1], w_outcome=1, w_alignment=2, w_cost=3)
    pay = res.payoffs.set_index("profile")
    assert list(pay.index) == ["0x0", "0x1", "1x0", "1x1"]
    np.testing.assert_allclose(pay["payoff_a"], [0.9, 1.1, 1.5, 1.9])
    np.testing.assert_allclose(pay["payoff_b"], [1.1, 1.5, 1.4, 2.4])
    np.testing.assert_allclose(pay["total"], [2.0, 2.6, 2.9, 4.3])
    np.testing.assert_allclose(pay["lam_a"], [0, 0, 1, 1])
    np.testing.assert_allclose(pay["alignment_b_lo"], [0.25, 0.55, 0.30, 0.85])
    # steering is dominant for both: the unique equilibrium is 1x1, which is also the optimum
    assert [e["profile"] for e in res.equilibria] == ["1x1"]
    assert res.social_optimum["profile"] == "1x1" and res.social_optimum["total"] == pytest.approx(4.3)
    assert res.price_of_anarchy == pytest.approx(1.0) and res.welfare_gap == pytest.approx(0.0)
    assert res.formula == "payoff_p(s) = 1 * outcome(s) + 2 * AQI_p(s) / 100 - 3 * KL_p(s)"
    assert pay["pure_equilibrium"].tolist() == [False, False, False, True]


def test_missing_profile_is_nan_listed_and_refused():
    drift = _hand_table()
    drift = drift[drift["profile"] != "1x1"]
    drift = drift[~((drift["profile"] == "0x1") & (drift["agent"] == "b"))]  # one agent's row only
    inp = payoff_inputs(drift, "a+b", [0, 1])
    assert np.isnan(inp["outcome"][1, 1]) and np.isnan(inp["alignment"][1, 1]).all()
    assert np.isnan(inp["alignment"][0, 1, 1]) and inp["alignment"][0, 1, 0] == pytest.approx(0.25)
    assert inp["outcome"][0, 0] == pytest.approx(0.5)
    assert inp["missing"] == ["0x1", "1x1"]
    assert missing_profiles(drift, "a+b", [0, 1]) == ["0x1", "1x1"]
    assert missing_profiles(_hand_table(), "a+b", [0, 1]) == []
    # a finer grid needs more runs; other pairings' rows never count
    assert missing_profiles(_hand_table(), "a+b", [0, 0.5, 1]) == [
        "0x0.5", "0.5x0", "0.5x0.5", "0.5x1", "1x0.5"]
    assert missing_profiles(_hand_table(), "b+a", [0, 1]) == ["0x0", "0x1", "1x0", "1x1"]
    with pytest.raises(DataError, match=r"0x1, 1x1"):
        solve_pairing(drift, "a+b", [0, 1], **UNIT)


def test_nan_values_of_a_measured_profile_are_refused_by_name():
    drift = _hand_table()
    drift.loc[(drift["profile"] == "1x0") & (drift["agent"] == "b"), "aqi_collab"] = np.nan
    with pytest.raises(DataError, match=r"1x0 \(aqi_collab of b\)"):
        solve_pairing(drift, "a+b", [0, 1], **UNIT)


def test_duplicate_rows_are_refused_even_under_another_spelling():
    drift = _hand_table()
    twice = pd.concat([drift, drift[drift["profile"] == "0x1"]], ignore_index=True)
    with pytest.raises(DataError, match=r"0x1 / a \(2 rows\)"):
        payoff_inputs(twice, "a+b", [0, 1])
    respelled = drift[drift["profile"] == "1x0"].assign(profile="1.0x0.0")
    with pytest.raises(DataError, match="several rows"):
        payoff_inputs(pd.concat([drift, respelled], ignore_index=True), "a+b", [0, 1])


def test_profile_names_are_matched_by_their_lambdas():
    ref = payoff_inputs(_hand_table(), "a+b", [0, 1])
    other = _table(["a", "b"], [0, 1], lambda lams: HAND[tuple(int(v) for v in lams)],
                   name=lambda lams: "x".join(f"{float(v):.1f}" for v in lams))
    assert set(other["profile"]) == {"0.0x0.0", "0.0x1.0", "1.0x0.0", "1.0x1.0"}
    for grid in ([0, 1], [0.0, 1.0], [1e-12, 1.0000001]):
        got = payoff_inputs(other, "a+b", grid)
        assert got["missing"] == []
        for key in ("outcome", "alignment", "alignment_lo", "cost"):
            np.testing.assert_array_equal(got[key], ref[key])
    # the grid's order is the strategy order
    rev = payoff_inputs(other, "a+b", [1, 0])
    np.testing.assert_array_equal(rev["outcome"], ref["outcome"][::-1, ::-1])
    assert rev["profiles"] == ["1x1", "1x0", "0x1", "0x0"]


def test_inconsistent_rows_and_bad_settings():
    drift = _hand_table()
    bad = drift.copy()
    bad.loc[(bad["profile"] == "0x1") & (bad["agent"] == "b"), "position"] = 0
    with pytest.raises(DataError, match="position"):
        payoff_inputs(bad, "a+b", [0, 1])
    bad = drift.copy()
    bad.loc[(bad["profile"] == "0x1") & (bad["agent"] == "b"), "lam"] = 0.0
    with pytest.raises(DataError, match="lam"):
        payoff_inputs(bad, "a+b", [0, 1])
    bad = drift.copy()
    bad.loc[(bad["profile"] == "0x1") & (bad["agent"] == "b"), "outcome"] = 0.1
    with pytest.raises(DataError, match="different outcomes"):
        payoff_inputs(bad, "a+b", [0, 1])
    with pytest.raises(DataError, match="kl"):
        payoff_inputs(drift.drop(columns="kl"), "a+b", [0, 1])
    with pytest.raises(ConfigError, match="empty"):
        payoff_inputs(drift, "a+b", [])
    with pytest.raises(ConfigError, match="told apart"):
        missing_profiles(drift, "a+b", [0, 1, 1.0000001])
    with pytest.raises(ConfigError, match="at least two"):
        missing_profiles(drift, "a", [0, 1])
    with pytest.raises(ConfigError, match="w_cost"):
        solve_pairing(drift, "a+b", [0, 1], w_outcome=1, w_alignment=1, w_cost=float("nan"))


# ---------------------------------------------------------------------------------------------
# games solved by hand


def test_prisoners_dilemma_in_disguise():
    # payoff_p = 0.5 + (40 + 30 * s_other)/100 - 0.2 * s_p: not steering is dominant, both steering
    # is better for both. (0,0): 0.9 each; (1,1): 1.0 each; (1,0): 0.7, 1.2.
    res = solve_pairing(_table(["a", "b"], [0, 1], _pd), "a+b", [0, 1], **UNIT)
    assert res.n_equilibria == 1 and res.n_pure == 1
    (eq,) = res.equilibria
    assert eq["pure"] and eq["profile"] == "0x0" and eq["level"] == 0.0
    assert eq["strategies"] == {"a": {"0": 1.0, "1": 0.0}, "b": {"0": 1.0, "1": 0.0}}
    assert eq["payoffs"]["a"] == pytest.approx(0.9) and eq["payoffs"]["b"] == pytest.approx(0.9)
    assert res.social_optimum["profile"] == "1x1" and res.social_optimum["total"] == pytest.approx(2.0)
    assert res.price_of_anarchy == pytest.approx(2.0 / 1.8)
    assert res.welfare_gap == pytest.approx(0.2)
    pay = res.payoffs.set_index("profile")
    assert pay.loc["1x0", "payoff_a"] == pytest.approx(0.7) and pay.loc["1x0", "payoff_b"] == pytest.approx(1.2)


def test_stag_hunt_mixed_equilibrium_level_and_undefined_price_of_anarchy():
    # payoff_p = [both steer] - 0.4 * s_p: equilibria 0x0, 1x1 and the mixed one where each steers
    # with probability 0.4 (indifference: q - 0.4 = 0); levels 0, 1, 0.4.
    res = solve_pairing(_table(["a", "b"], [0, 1], _stag), "a+b", [0, 1], **UNIT)
    assert res.n_equilibria == 3 and res.n_pure == 2
    assert [e["profile"] for e in res.equilibria if e["pure"]] == ["0x0", "1x1"]
    (mixed,) = [e for e in res.equilibria if not e["pure"]]
    assert mixed["profile"] is None and mixed["method"] == "support_enumeration"
    for agent in ("a", "b"):
        assert mixed["strategies"][agent]["1"] == pytest.approx(0.4)
        assert mixed["expected_lambda"][agent] == pytest.approx(0.4)
        assert mixed["payoffs"][agent] == pytest.approx(0.0, abs=1e-9)
    assert mixed["level"] == pytest.approx(0.4)
    assert res.level["mean"] == pytest.approx(1.4 / 3)
    assert res.level["min"] == 0.0 and res.level["max"] == 1.0
    # the worst equilibrium's total is 0: no ratio, a note instead of a crash
    assert math.isnan(res.price_of_anarchy)
    assert any("price of anarchy undefined" in n for n in res.notes)
    assert res.welfare_gap == pytest.approx(1.2)
    assert res.social_optimum == {"profile": "1x1", "total": pytest.approx(1.2),
                                     "payoffs": {"a": pytest.approx(0.6), "b": pytest.approx(0.6)}}


def test_three_agent_public_good_has_the_known_pure_equilibrium():
    # payoff_p = 0.5 + (40 + 20 * #others steering)/100 - 0.2 * s_p: not steering is dominant
    # (0x0x0, 0.9 each, total 2.7); all steering gives 1.1 each (total 3.3): PoA 11/9.
    def fn(lams):
        n = sum(lams)
        return 0.5, tuple(40 + 20 * (n - s) for s in lams), tuple(0.2 * s for s in lams)

    drift = pd.concat([_table(["x", "y", "z"], [0, 1], fn), _hand_table()], ignore_index=True)
    res = solve_pairing(drift, "x+y+z", [0, 1], **UNIT, n_starts=4, max_iter=3000)
    assert res.players == ["x", "y", "z"] and len(res.profiles) == 8
    assert [e["profile"] for e in res.equilibria] == ["0x0x0"] and res.equilibria[0]["pure"]
    assert res.social_optimum["profile"] == "1x1x1"
    assert res.social_optimum["total"] == pytest.approx(3.3)
    assert res.price_of_anarchy == pytest.approx(3.3 / 2.7)
    assert not res.solver["complete"] and any("replicator" in n for n in res.notes)
    pay = res.payoffs.set_index("profile")
    # y steers alone: y pays 0.2, x and z gain 0.2 of AQI
    np.testing.assert_allclose(pay.loc["0x1x0", ["payoff_x", "payoff_y", "payoff_z"]], [1.1, 0.7, 1.1])


def test_sensitivity_level_zero_without_alignment_weight_and_top_lambda_above_threshold():
    # AQI_p = 40 + 20 * lam_p, KL_p = 0.1 * lam_p, outcome 0.5: a unit of lambda earns
    # 0.2 * w_alignment - 0.1, so below w_alignment = 0.5 lambda 0 is dominant, above it lambda 2.
    def fn(lams):
        return 0.5, tuple(40 + 20 * v for v in lams), tuple(0.1 * v for v in lams)

    drift = _table(["a", "b"], [0, 1, 2], fn)
    res = solve_pairing(drift, "a+b", [0, 1, 2], w_outcome=1, w_alignment=1, w_cost=1,
                        sensitivity_weights=[0, 0.25, 0.45, 0.55, 1, 3])
    sens = res.sensitivity
    assert list(sens.columns) == SENSITIVITY_COLUMNS
    assert sens["weight"].tolist() == [0, 0.25, 0.45, 0.55, 1, 3]
    assert sens["n_equilibria"].tolist() == [1] * 6 and sens["n_pure"].tolist() == [1] * 6
    np.testing.assert_allclose(sens["level_mean"], [0, 0, 0, 2, 2, 2])
    np.testing.assert_allclose(sens["level_min"], sens["level_max"])
    assert sens["configured"].tolist() == [False, False, False, False, True, False]
    assert [e["profile"] for e in res.equilibria] == ["2x2"] and res.level["mean"] == 2.0


# ---------------------------------------------------------------------------------------------
# files


def _png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_game_round_trips_and_summarize(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    stag = solve_pairing(_table(["a", "b"], [0, 1], _stag), "a+b", [0, 1], **UNIT,
                         sensitivity_weights=[0, 1, 2])
    paths = write_game(stag, tmp_path / "a+b")
    assert sorted(p.name for p in (tmp_path / "a+b").iterdir()) == sorted(GAME_FILES)
    assert all(_png(paths[n]) for n in ("payoff_matrix.png", "equilibrium_sensitivity.png"))

    pay = pd.read_csv(paths["payoffs.csv"])
    assert list(pay.columns) == list(stag.payoffs.columns)
    assert pay["profile"].tolist() == ["0x0", "0x1", "1x0", "1x1"]
    np.testing.assert_allclose(pay["payoff_a"], [0, 0, -0.4, 0.6], atol=1e-12)
    np.testing.assert_allclose(pay["payoff_b"], [0, -0.4, 0, 0.6], atol=1e-12)
    assert pay["pure_equilibrium"].tolist() == [True, False, False, True]
    sens = pd.read_csv(paths["sensitivity.csv"])
    assert list(sens.columns) == SENSITIVITY_COLUMNS and sens["weight"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(sens["level_mean"], stag.sensitivity["level_mean"], rtol=1e-5)

    rec = json.loads(paths["equilibria.json"].read_text())  # strict JSON: NaN became null
    assert rec["price_of_anarchy"] is None and rec["welfare_gap"] == pytest.approx(1.2)
    assert rec["players"] == ["a", "b"] and rec["lambdas"] == [0.0, 1.0]
    assert rec["weights"] == UNIT and "payoffs" not in rec
    assert len(rec["equilibria"]) == 3
    assert rec["equilibria"][2]["strategies"]["b"]["1"] == pytest.approx(0.4)
    assert [r["weight"] for r in rec["sensitivity"]] == [0, 1, 2]

    pd_res = solve_pairing(_table(["c", "d"], [0, 1], _pd), "c+d", [0, 1], **UNIT)
    pd_paths = write_game(pd_res, tmp_path / "c+d")

    def fn3(lams):
        return 0.5, tuple(40 + 20 * (sum(lams) - s) for s in lams), tuple(0.2 * s for s in lams)

    three = solve_pairing(_table(["x", "y", "z"], [0, 1], fn3), "x+y+z", [0, 1], **UNIT,
                          n_starts=2, max_iter=2000)
    three_paths = write_game(three, tmp_path / "x+y+z")  # bar chart, empty sweep
    assert _png(three_paths["payoff_matrix.png"]) and _png(three_paths["equilibrium_sensitivity.png"])

    summary = summarize_games([paths["equilibria.json"], pd_paths["equilibria.json"], three_paths["equilibria.json"]])
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert summary["pairing"].tolist() == ["a+b", "c+d", "x+y+z"]
    assert summary["n_equilibria"].tolist() == [3, 1, 1]
    assert summary["pure_equilibria"].tolist() == ["0x0;1x1", "0x0", "0x0x0"]
    assert summary["social_optimum"].tolist() == ["1x1", "1x1", "1x1x1"]
    assert math.isnan(summary["price_of_anarchy"][0])
    np.testing.assert_allclose(summary["price_of_anarchy"][1:], [2.0 / 1.8, 3.3 / 2.7])
    np.testing.assert_allclose(summary["level_mean"], [1.4 / 3, 0, 0])
    assert summary["players"][2] == "x;y;z"
