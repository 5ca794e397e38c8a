"""Equilibria of textbook games solved exactly by hand, the degenerate-game fallback, replicator
dynamics against nashpy, the payoff formula and the weight sensitivity sweep."""

from __future__ import annotations

import warnings

import nashpy
import numpy as np
import pytest

from driftlib.core.errors import ConfigError, DataError
from driftlib.stats.equilibria import (
    Equilibrium,
    expected_payoffs,
    is_nash,
    mixed_equilibria,
    nash_gap,
    payoff_table,
    price_of_anarchy,
    pure_equilibria,
    replicator_equilibria,
    sensitivity,
    social_optimum,
    solve_game,
    welfare_gap,
)


def _bimatrix(a, b) -> np.ndarray:
    return np.stack([np.asarray(a, float), np.asarray(b, float)], axis=-1)


def _profiles(eqs: list[Equilibrium]) -> set[tuple[int, ...]]:
    return {e.profile for e in eqs if e.pure}


def _close(eq: Equilibrium, *xs, atol: float = 1e-9) -> bool:
    return all(np.allclose(s, x, atol=atol) for s, x in zip(eq.strategies, xs))


# strategy 0 = cooperate, 1 = defect
PD = _bimatrix([[3, 0], [5, 1]], [[3, 5], [0, 1]])
PENNIES = _bimatrix([[1, -1], [-1, 1]], [[-1, 1], [1, -1]])
# row prefers (0, 0) with payoff 2, column prefers (1, 1) with payoff 2; 1 otherwise on the diagonal
BOS = _bimatrix([[2, 0], [0, 1]], [[1, 0], [0, 2]])
# degenerate: the row player ties against column 0, and column 0 is a best response only for
# row mixtures x0 in [1/3, 2/3]. No pure equilibrium; the equilibria are the segment
# {(x, 1 - x), column 0} for x in [1/3, 2/3], whose supports (2 vs 1) support enumeration skips.
DEGENERATE = _bimatrix([[1, 0, 2], [1, 2, 0]], [[2, 3, 0], [2, 0, 3]])


# ---------------------------------------------------------------------------------------------
# two-player textbook games


def test_prisoners_dilemma_unique_defect_and_price_of_anarchy():
    pure = pure_equilibria(PD)
    assert [e.profile for e in pure] == [(1, 1)]
    assert pure[0].method == "enumeration" and np.allclose(pure[0].payoffs, [1, 1])
    mixed = mixed_equilibria(PD)
    assert len(mixed) == 1 and mixed[0].pure and mixed[0].profile == (1, 1)
    assert social_optimum(PD) == ((0, 0), 6.0)
    poa = price_of_anarchy(PD, pure)
    assert poa == pytest.approx(3.0) and poa > 1
    assert welfare_gap(PD, pure) == pytest.approx(4.0)


def test_matching_pennies_unique_mixed_from_support_enumeration():
    assert pure_equilibria(PENNIES) == []
    eqs = mixed_equilibria(PENNIES)
    assert len(eqs) == 1
    (eq,) = eqs
    assert eq.method == "support_enumeration" and not eq.pure and eq.profile is None
    assert _close(eq, [0.5, 0.5], [0.5, 0.5])
    assert np.allclose(eq.payoffs, [0, 0])


def test_battle_of_the_sexes_two_pure_and_the_known_mixed():
    assert [e.profile for e in pure_equilibria(BOS)] == [(0, 0), (1, 1)]
    eqs = mixed_equilibria(BOS)
    assert len(eqs) == 3 and {e.method for e in eqs} == {"support_enumeration"}
    assert _profiles(eqs) == {(0, 0), (1, 1)}
    (mixed,) = [e for e in eqs if not e.pure]
    assert _close(mixed, [2 / 3, 1 / 3], [1 / 3, 2 / 3])
    assert np.allclose(mixed.payoffs, [2 / 3, 2 / 3])
    # solve_game: the pure ones keep the enumeration label, nothing twice
    both = solve_game(BOS)
    assert [e.method for e in both] == ["enumeration", "enumeration", "support_enumeration"]


def test_degenerate_game_uses_lemke_howson_fallback():
    # nashpy's support enumeration alone finds nothing here (and warns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert list(nashpy.Game(DEGENERATE[..., 0], DEGENERATE[..., 1]).support_enumeration()) == []
    assert pure_equilibria(DEGENERATE) == []
    eqs = mixed_equilibria(DEGENERATE)
    assert eqs and {e.method for e in eqs} == {"lemke_howson"}
    for eq in eqs:
        assert is_nash(DEGENERATE, eq.strategies)
        assert np.allclose(eq.strategies[1], [1, 0, 0])
        x0 = eq.strategies[0][0]
        # an extreme point of the equilibrium segment
        assert min(abs(x0 - 1 / 3), abs(x0 - 2 / 3)) < 1e-9
    assert len({round(float(e.strategies[0][0]), 6) for e in eqs}) == len(eqs)  # deduplicated


def test_replicator_on_two_player_game_agrees_with_nashpy():
    a = [[3, 0, 1], [1, 2, 0], [0, 1, 4]]
    b = [[2, 1, 0], [0, 3, 1], [1, 0, 2]]
    game = _bimatrix(a, b)
    exact = mixed_equilibria(game)
    assert {e.method for e in exact} == {"support_enumeration"}
    rep = replicator_equilibria(game, n_starts=30, seed=1)
    assert len(rep) >= 2 and {e.method for e in rep} == {"replicator"}
    for r in rep:
        assert any(_close(r, *e.strategies, atol=1e-5) for e in exact), r.strategies
        assert is_nash(game, r.strategies, eps=1e-6)


# ---------------------------------------------------------------------------------------------
# three players


def _three_player(fn) -> np.ndarray:
    out = np.zeros((2, 2, 2, 3))
    for s in np.ndindex(2, 2, 2):
        out[s] = fn(*s)
    return out


def test_three_player_dominance_chain_pure_and_replicator():
    # p0: strategy 1 strictly dominant; p1: wants to copy p0; p2: plays 1 only if both others do.
    # Iterated strict dominance leaves (1, 1, 1), the unique equilibrium, pure or mixed.
    game = _three_player(lambda a, b, c: (a, float(b == a), c * (a + b - 1.5)))
    assert [e.profile for e in pure_equilibria(game)] == [(1, 1, 1)]
    eqs = mixed_equilibria(game, n_starts=20)
    assert len(eqs) == 1
    assert eqs[0].method == "replicator" and eqs[0].pure and eqs[0].profile == (1, 1, 1)
    assert np.allclose(eqs[0].payoffs, [1, 1, 0.5])


def test_three_player_coordination_replicator_finds_both_pure():
    # one point per other player choosing the same; two points each if that choice is 1
    game = _three_player(
        lambda *s: tuple(sum((1 + s[p]) * (s[q] == s[p]) for q in range(3) if q != p) for p in range(3))
    )
    assert _profiles(pure_equilibria(game)) == {(0, 0, 0), (1, 1, 1)}
    eqs = mixed_equilibria(game, n_starts=40, seed=3)
    assert _profiles(eqs) == {(0, 0, 0), (1, 1, 1)}
    assert all(is_nash(game, e.strategies, eps=1e-6) for e in eqs)
    # seeded: the same starts give the same answer
    again = mixed_equilibria(game, n_starts=40, seed=3)
    assert [e.profile for e in again] == [e.profile for e in eqs]


# ---------------------------------------------------------------------------------------------
# payoffs, checks and welfare


def test_expected_payoffs_and_is_nash():
    x, y = [0.25, 0.75], [0.6, 0.4]
    want_row = 0.25 * (0.6 * 2) + 0.75 * (0.4 * 1)
    want_col = 0.25 * (0.6 * 1) + 0.75 * (0.4 * 2)
    assert np.allclose(expected_payoffs(BOS, [x, y]), [want_row, want_col])
    assert is_nash(BOS, [[2 / 3, 1 / 3], [1 / 3, 2 / 3]])
    assert not is_nash(BOS, [x, y])
    assert not is_nash(PD, [[1, 0], [1, 0]])
    assert nash_gap(PD, [[1, 0], [1, 0]]) == pytest.approx(2.0)
    # the tolerance is relative to the payoff range: units and shifts do not matter
    scaled = 1000 * BOS + 7
    assert is_nash(scaled, [[2 / 3 + 1e-10, 1 / 3 - 1e-10], [1 / 3, 2 / 3]])
    # the row player is indifferent against (1/3, 2/3), but then the column player is not
    assert not is_nash(scaled, [[0.7, 0.3], [1 / 3, 2 / 3]])
    assert not is_nash(scaled, [[2 / 3, 1 / 3], [0.4, 0.6]])


def test_pure_equilibria_ties_count_as_best_responses():
    game = _bimatrix([[1, 1], [1, 0]], [[1, 1], [1, 0]])
    assert _profiles(pure_equilibria(game)) == {(0, 0), (0, 1), (1, 0)}
    assert _profiles(pure_equilibria(game, tol=0)) == {(0, 0), (0, 1), (1, 0)}  # exact ties
    # a tie up to rounding still counts; a real gap does not
    noisy = game.copy()
    noisy[1, 0, 0] -= 1e-12
    assert (1, 0) in _profiles(pure_equilibria(noisy))
    noisy[1, 0, 0] -= 1e-3
    assert (1, 0) not in _profiles(pure_equilibria(noisy))


def test_price_of_anarchy_refuses_nonpositive_welfare():
    shifted = PD - 2  # equilibrium (D, D) now totals -2
    eqs = pure_equilibria(shifted)
    with pytest.raises(DataError, match="welfare_gap"):
        price_of_anarchy(shifted, eqs)
    assert welfare_gap(shifted, eqs) == pytest.approx(welfare_gap(PD, pure_equilibria(PD)))
    with pytest.raises(DataError, match="no equilibria"):
        price_of_anarchy(PD, [])


def test_equilibrium_is_read_only():
    eq = pure_equilibria(PD)[0]
    with pytest.raises(ValueError):
        eq.strategies[0][0] = 0.5
    with pytest.raises(AttributeError):
        eq.pure = False  # type: ignore[misc]
    assert eq.total == pytest.approx(2.0)


def test_bad_inputs_are_refused():
    with pytest.raises(DataError, match="shape"):
        pure_equilibria(np.zeros((2, 2, 3)))
    bad = PD.copy()
    bad[0, 1, 1] = np.nan
    with pytest.raises(DataError, match=r"\(0, 1\)"):
        mixed_equilibria(bad)
    with pytest.raises(DataError, match="probability"):
        is_nash(PD, [[0.5, 0.6], [1, 0]])
    with pytest.raises(DataError, match="strategies"):
        expected_payoffs(PD, [[1, 0]])
    with pytest.raises(ConfigError, match="n_starts"):
        replicator_equilibria(PD, n_starts=-1)


def test_payoff_table_follows_the_formula():
    rng = np.random.default_rng(0)
    outcome = rng.normal(size=(2, 3))
    alignment = rng.normal(size=(2, 3, 2))
    cost = rng.normal(size=(2, 3, 2))
    table = payoff_table(outcome, alignment, cost, w_outcome=0.5, w_alignment=2.0, w_cost=1.5)
    assert table.shape == (2, 3, 2)
    for s in np.ndindex(2, 3):
        for p in range(2):
            want = 0.5 * outcome[s] + 2.0 * alignment[s + (p,)] - 1.5 * cost[s + (p,)]
            assert table[s + (p,)] == pytest.approx(want)
    # one hand-checked entry
    small = payoff_table(
        np.array([[1.0, 2.0], [3.0, 4.0]]),
        np.arange(8.0).reshape(2, 2, 2),
        np.ones((2, 2, 2)),
        w_outcome=10,
        w_alignment=1,
        w_cost=0.5,
    )
    assert small[1, 0, 1] == pytest.approx(10 * 3 + 5 - 0.5)


def test_payoff_table_refuses_unmeasured_profiles():
    outcome = np.ones((2, 2))
    alignment = np.ones((2, 2, 2))
    cost = np.zeros((2, 2, 2))
    alignment[1, 0, 1] = np.nan
    outcome[0, 1] = np.nan
    with pytest.raises(DataError) as err:
        payoff_table(outcome, alignment, cost, w_outcome=1, w_alignment=0, w_cost=1)
    msg = str(err.value)
    assert "(1, 0): alignment[player 1]" in msg and "(0, 1): outcome" in msg
    assert "2 of 4" in msg and "(1, 1)" not in msg
    weights = {"w_outcome": 1, "w_alignment": 1}
    with pytest.raises(DataError, match="shape"):
        payoff_table(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2, 2)), w_cost=1, **weights)
    with pytest.raises(ConfigError, match="w_cost"):
        payoff_table(np.ones((2, 2)), np.ones((2, 2, 2)), np.ones((2, 2, 2)), w_cost=float("nan"), **weights)


# ---------------------------------------------------------------------------------------------
# sensitivity


def _alignment_game(w: float) -> np.ndarray:
    """Two agents choose 0 (unaligned) or 1 (aligned). Aligning costs 1.5 and earns ``w``; the shared
    outcome is 2 only when both align. Aligning pays against an aligned partner iff ``w > -0.5``
    and against an unaligned one iff ``w > 1.5``: a stag hunt (two pure + one mixed equilibrium,
    partner aligned with probability ``(1.5 - w) / 2``) below 1.5, aligning dominant above it."""
    s = np.indices((2, 2))  # s[p][profile] = player p's posture
    outcome = 2.0 * (s[0] == 1) * (s[1] == 1)
    alignment = np.moveaxis(s, 0, -1).astype(float)
    return payoff_table(outcome, alignment, 1.5 * alignment, w_outcome=1, w_alignment=w, w_cost=1)


def test_sensitivity_switches_at_the_known_weight():
    def lowest_alignment(eqs: list[Equilibrium]) -> float:
        return min(float(np.mean([x[1] for x in e.strategies])) for e in eqs)

    weights = [0.0, 0.5, 1.0, 1.4, 1.6, 2.0, 3.0]
    table = sensitivity(_alignment_game, weights, summary=lowest_alignment)
    assert list(table.columns) == ["weight", "n_equilibria", "n_pure", "summary"]
    assert table["weight"].tolist() == weights
    assert table["n_equilibria"].tolist() == [3, 3, 3, 3, 1, 1, 1]
    assert table["n_pure"].tolist() == [2, 2, 2, 2, 1, 1, 1]
    assert table["summary"].tolist() == [0, 0, 0, 0, 1, 1, 1]
    # the stag hunt's mixed equilibrium sits where theory puts it
    for w in (0.0, 0.5, 1.4):
        (mixed,) = [e for e in solve_game(_alignment_game(w)) if not e.pure]
        q = (1.5 - w) / 2
        assert _close(mixed, [1 - q, q], [1 - q, q])
    with pytest.raises(ConfigError, match="empty"):
        sensitivity(_alignment_game, [], summary=lowest_alignment)
