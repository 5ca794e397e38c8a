"""Phase 3's operator comparison from constructed score and cost tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftlib.core.artifacts import read_table, write_table
from driftlib.phases.same_arch.operators import compare_operators


def _tables(tmp_path, operator: str, aqis: list[float], gains: list[float], resolvable: list[bool]):
    lams = [0.0, 0.5, 1.0]
    rows = []
    for vector, values in (("own", aqis), ("random", [aqis[0]] * 3)):
        for i, (lam, aqi) in enumerate(zip(lams, values)):
            row = {"model": "m", "operator": operator, "vector": vector, "lam": lam, "layer": 3, "category": "overall",
                   "primary": True, "aqi": aqi, "ci_low": aqi - 1.0, "ci_high": aqi + 1.0}
            own = vector == "own" and lam != 0.0
            row.update(gain=gains[i] if own else np.nan, gain_ci_low=gains[i] - 0.5 if own else np.nan,
                       gain_ci_high=gains[i] + 0.5 if own else np.nan, gain_p=0.01 if own else np.nan,
                       gain_mde=0.8 if own else np.nan, gain_resolvable=resolvable[i] if own else None,
                       gain_se=0.25 if own else np.nan)
            rows.append(row)
    aqi_path, cost_path = tmp_path / f"{operator}_aqi.parquet", tmp_path / f"{operator}_cost.parquet"
    write_table(pd.DataFrame(rows), aqi_path)
    write_table(pd.DataFrame({"vector": ["own"] * 3, "lam": lams, "kl": [0.0, 0.1, 0.2],
                              "repetition": [0.1, 0.1, 0.1]}), cost_path)
    return aqi_path, cost_path


def test_the_comparison_carries_the_paired_gain_at_the_best_lambda(tmp_path) -> None:
    a = _tables(tmp_path, "add", [1.0, 1.1, 1.05], [0.0, 0.1, 0.05], [False, False, False])
    c = _tables(tmp_path, "conditional", [1.0, 2.0, 3.5], [0.0, 1.0, 2.5], [False, True, True])
    table = compare_operators([a[0], c[0]], [a[1], c[1]], [], tmp_path / "out", max_kl=0.5,
                              max_repetition_increase=0.2).set_index("operator")
    assert table.loc["conditional", "best_lam"] == 1.0 and table.loc["conditional", "gain"] == pytest.approx(2.5)
    assert table.loc["conditional", "gain_ci_low"] == pytest.approx(2.0) and bool(table.loc["conditional", "gain_resolvable"])
    assert table.loc["add", "best_lam"] == 0.5 and not bool(table.loc["add", "gain_resolvable"])
    assert (tmp_path / "out" / "operators.png").is_file()
    assert read_table(tmp_path / "out" / "operator_comparison.parquet")[0].shape[0] == 2


def test_the_share_of_the_phase_1_gap_closed_is_the_fieller_ratio(tmp_path) -> None:
    """gain 2.5 (se 0.25) at the best lambda against phase 1's gap 6 - 1 = 5 (se hypot(0.4, 0.3) = 0.5):
    the share 0.5, and the Fieller interval: the lambdas where (gain - lambda * gap)^2 =
    z^2 (se_gain^2 + lambda^2 se_gap^2), solved here as a quadratic."""
    from scipy.stats import norm

    c = _tables(tmp_path, "conditional", [1.0, 2.0, 3.5], [0.0, 1.0, 2.5], [False, True, True])
    phase1 = pd.DataFrame({"model": ["m", "m", "m", "m"], "variant": ["base", "aligned", "base", "aligned"],
                           "category": ["overall"] * 4, "layer": [3, 3, 1, 1], "aqi": [1.0, 6.0, 0.0, 9.0],
                           "se": [0.3, 0.4, 0.1, 0.1]})
    write_table(phase1, tmp_path / "aqi_summary.parquet")
    row = compare_operators([c[0]], [c[1]], [], tmp_path / "out", max_kl=0.5, max_repetition_increase=0.2,
                            aqi_summary=tmp_path / "aqi_summary.parquet").iloc[0]
    z = norm.ppf(0.975)
    g, sg, G, sG = 2.5, 0.25, 5.0, 0.5
    lo, hi = sorted(np.roots([G ** 2 - z ** 2 * sG ** 2, -2 * g * G, g ** 2 - z ** 2 * sg ** 2]).real)
    assert row["gap"] == pytest.approx(5.0) and row["gap_share"] == pytest.approx(0.5)
    assert row["gap_share_ci_low"] == pytest.approx(lo, rel=1e-6) and row["gap_share_ci_high"] == pytest.approx(hi, rel=1e-6)
    no_phase1 = compare_operators([c[0]], [c[1]], [], tmp_path / "out2", max_kl=0.5, max_repetition_increase=0.2).iloc[0]
    assert np.isnan(no_phase1["gap_share"]) and "no phase-1 table" in no_phase1["gap_note"]
