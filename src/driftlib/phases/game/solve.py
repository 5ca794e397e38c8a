"""Phase 6: the alignment-posture game of a pairing, from phase 5's measurements.

Each agent of a pairing is a player; its strategies are the postures of a grid ``lambdas`` (the
same grid for every player; strategy ``k`` = steering strength ``lambdas[k]``, ``0`` = unsteered).
A profile ``s = (s_1, ..., s_P)`` is one posture per player, named by
:func:`driftlib.core.profiles.profile_name`. Player ``p``'s payoff in profile ``s`` is

    ``payoff_p(s) = w_outcome * outcome(s) + w_alignment * AQI_p(s) / 100 - w_cost * KL_p(s)``

with ``outcome(s)`` the run's task outcome in ``[0, 1]``, ``AQI_p(s)`` the agent's AQI with the
collaboration transcript in context (``aqi_collab``, divided by 100 so it is on the outcome's 0-1
scale) and ``KL_p(s)`` the capability cost of its posture (``kl``, nats/token). All three come from
phase 5's summary table (one row per pairing, profile and agent); a profile without rows is never
invented: it is reported by :func:`missing_profiles` and refused by :func:`solve_pairing`.

Numerical work is :mod:`driftlib.stats.equilibria`'s (:func:`~driftlib.stats.equilibria.payoff_table`,
:func:`~driftlib.stats.equilibria.solve_game`, welfare); this module maps the table onto arrays, sums up
the equilibria (the *equilibrium alignment level*: the players' expected lambda, averaged over
players and equilibria), sweeps the alignment weight, and writes the results. No torch here.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftlib.core.artifacts import read_json, write_json, write_table
from driftlib.core.errors import ArtifactError, ConfigError, DataError
from driftlib.core.profiles import (
    pairing_name,
    parse_pairing,
    parse_profile,
    profile_name,
)
from driftlib.stats import equilibria as eqlib

__all__ = [
    "FORMULA",
    "GameResult",
    "PAYOFF_COLUMNS_NEEDED",
    "SENSITIVITY_COLUMNS",
    "SUMMARY_COLUMNS",
    "GAME_FILES",
    "payoff_inputs",
    "missing_profiles",
    "equilibrium_level",
    "solve_pairing",
    "write_game",
    "summarize_games",
]

#: the payoff formula (the result of :func:`solve_pairing` gives it with the weights filled in)
FORMULA = "payoff_p(s) = w_outcome * outcome(s) + w_alignment * AQI_p(s) / 100 - w_cost * KL_p(s)"
#: columns of the phase-5 table that :func:`payoff_inputs` reads
PAYOFF_COLUMNS_NEEDED = (
    "pairing", "profile", "agent", "position",
    "aqi_collab", "aqi_collab_lo", "aqi_collab_hi", "outcome", "outcome_lo", "outcome_hi", "kl",
)
#: columns of :func:`solve_pairing`'s ``sensitivity`` frame
SENSITIVITY_COLUMNS = ["weight", "n_equilibria", "n_pure", "level_mean", "level_min", "level_max", "configured"]
#: columns of :func:`summarize_games`
SUMMARY_COLUMNS = [
    "pairing", "players", "n_equilibria", "n_pure", "pure_equilibria", "social_optimum",
    "social_optimum_total", "price_of_anarchy", "welfare_gap", "w_outcome", "w_alignment", "w_cost",
    "level_mean", "level_min", "level_max",
]
#: the files :func:`write_game` writes into its folder
GAME_FILES = ("payoffs.csv", "sensitivity.csv", "equilibria.json", "payoff_matrix.png",
              "equilibrium_sensitivity.png")

#: a lambda read from a profile name matches a grid lambda within this relative tolerance
#: (profile names keep 6 significant digits, a relative error of at most 5e-6)
_LAM_RTOL = 1e-5
_LAM_ATOL = 1e-9
#: the rows of one profile must agree on its outcome to within this much
_OUTCOME_ATOL = 1e-6
#: most names listed in an error message
_MAX_LISTED = 20


# ---------------------------------------------------------------------------------------------
# validation helpers


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    if len(names) > _MAX_LISTED:
        shown += f", ... and {len(names) - _MAX_LISTED} more"
    return shown


def _same_lam(a: float, b: float, factor: float = 1.0) -> bool:
    return abs(a - b) <= factor * (_LAM_ATOL + _LAM_RTOL * max(abs(a), abs(b)))


def _grid(lambdas: Sequence[float]) -> list[float]:
    """``lambdas`` as floats; ConfigError when empty, not finite, or two are indistinguishable."""
    if isinstance(lambdas, (str, bytes)) or not isinstance(lambdas, Iterable):
        raise ConfigError(f"lambdas: expected a list of numbers (the posture grid), got {lambdas!r}")
    grid = []
    for v in lambdas:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
            raise ConfigError(f"lambdas: every posture must be a finite number, got {v!r} in {list(lambdas)}")
        grid.append(float(v) + 0.0)
    if not grid:
        raise ConfigError("lambdas: the posture grid is empty; give at least one steering strength")
    names = [f"{v:g}" for v in grid]
    for i, j in itertools.combinations(range(len(grid)), 2):
        if names[i] == names[j] or _same_lam(grid[i], grid[j], factor=2.0):
            raise ConfigError(
                f"lambdas: postures {grid[i]!r} and {grid[j]!r} cannot be told apart in profile names "
                f"({names[i]!r}, {names[j]!r}); give distinct steering strengths"
            )
    return grid


def _players(pairing: str) -> list[str]:
    try:
        return parse_pairing(pairing)
    except ConfigError as exc:
        raise ConfigError(f"pairing {pairing!r}: {exc}") from None


def _require(drift: pd.DataFrame, columns: Sequence[str]) -> None:
    if not isinstance(drift, pd.DataFrame):
        raise DataError(f"the phase-5 table must be a pandas DataFrame, got {type(drift).__name__}")
    missing = [c for c in columns if c not in drift.columns]
    if missing:
        raise DataError(
            f"the phase-5 table lacks column(s) {missing} (it has {list(drift.columns)}); "
            "re-run phase 5's summary"
        )


def _grid_index(lams: Sequence[float], grid: Sequence[float]) -> tuple[int, ...] | None:
    """Grid indices of a profile's lambdas, or None when one is off the grid."""
    out = []
    for v in lams:
        hit = [k for k, g in enumerate(grid) if _same_lam(v, g)]
        if not hit:
            return None
        out.append(hit[0])
    return tuple(out)


def _profile_names(grid: Sequence[float], n_players: int) -> list[str]:
    """Every profile of the grid, in C order (player 0's posture varies slowest)."""
    return [profile_name(p) for p in itertools.product(grid, repeat=n_players)]


def _locate(drift: pd.DataFrame, pairing: str, grid: list[float], players: list[str],
            *, check: bool) -> tuple[dict[tuple[tuple[int, ...], int], list[int]], pd.DataFrame]:
    """The table's rows of ``pairing`` on the grid, keyed by (grid profile, player).

    Returns ``(where, sub)``: ``sub`` the pairing's rows, ``where`` their positions in ``sub``
    (``iloc``) per key. Rows of other pairings, and rows whose profile is off the
    grid, are left out. With ``check``, a row whose agent, position or ``lam`` contradicts the
    pairing and its profile is a DataError.
    """
    name = pairing_name(players)
    sub = drift[drift["pairing"].astype(str) == name]
    cache: dict[str, tuple[int, ...] | None] = {}
    where: dict[tuple[tuple[int, ...], int], list[int]] = {}
    has_lam = "lam" in drift.columns
    for i, (prof, agent) in enumerate(zip(sub["profile"].astype(str), sub["agent"].astype(str))):
        if prof not in cache:
            try:
                lams = parse_profile(prof, n_agents=len(players))
            except ConfigError as exc:
                raise DataError(f"phase-5 table, pairing {name!r}: {exc}") from None
            cache[prof] = _grid_index(lams, grid)
        idx = cache[prof]
        if idx is None:
            continue
        if agent not in players:
            raise DataError(
                f"phase-5 table, pairing {name!r}, profile {prof!r}: agent {agent!r} is not one of "
                f"the pairing's agents {players}"
            )
        p = players.index(agent)
        if check:
            pos = sub["position"].iloc[i]
            if pd.isna(pos) or int(pos) != p:
                raise DataError(
                    f"phase-5 table, pairing {name!r}, profile {prof!r}: agent {agent!r} has position "
                    f"{pos!r}, but it is player {p} of the pairing"
                )
            if has_lam:
                lam = sub["lam"].iloc[i]
                if pd.isna(lam) or not _same_lam(float(lam), grid[idx[p]]):
                    raise DataError(
                        f"phase-5 table, pairing {name!r}, profile {prof!r}: agent {agent!r} has lam "
                        f"{lam!r}, but the profile gives it {grid[idx[p]]:g}"
                    )
        where.setdefault((idx, p), []).append(i)
    return where, sub


# ---------------------------------------------------------------------------------------------
# inputs


def missing_profiles(drift: pd.DataFrame, pairing: str, lambdas: Sequence[float]) -> list[str]:
    """Profiles of the grid that the phase-5 table does not (fully) hold, by name.

    A profile is missing when at least one agent of ``pairing`` has no row for it. Names are in
    :func:`~driftlib.core.profiles.profile_name` form over ``lambdas`` (the grid as given), in C order
    (player 0's posture varies slowest). Reads only the ``pairing``, ``profile`` and ``agent``
    columns; rows of other pairings and rows off the grid are ignored.
    """
    grid = _grid(lambdas)
    players = _players(pairing)
    _require(drift, ("pairing", "profile", "agent"))
    where, _ = _locate(drift, pairing, grid, players, check=False)
    shape = (len(grid),) * len(players)
    out = []
    for flat, name in enumerate(_profile_names(grid, len(players))):
        idx = tuple(int(i) for i in np.unravel_index(flat, shape))
        if any((idx, p) not in where for p in range(len(players))):
            out.append(name)
    return out


def payoff_inputs(drift: pd.DataFrame, pairing: str, lambdas: Sequence[float]) -> dict[str, Any]:
    """The measured quantities of every profile of the grid, as arrays over profiles.

    Parameters
    ----------
    drift : DataFrame
        Phase 5's summary table, one row per (pairing, profile, agent), with at least the columns
        :data:`PAYOFF_COLUMNS_NEEDED` (and ``lam``, checked when present).
    pairing : str
        The pairing's name (``"llama+qwen2"``); player ``p`` is the agent at position ``p``.
    lambdas : sequence of float, length ``S``
        The posture grid, the same for every player; strategy ``k`` is ``lambdas[k]``.

    Returns
    -------
    dict with, for ``P`` players (``S..S`` = ``P`` axes of length ``S``):

    - ``players`` (list of ``P`` agent names), ``lambdas`` (list of ``S`` floats);
    - ``outcome``, ``outcome_lo``, ``outcome_hi``: ``[S..S]`` (the run's task outcome and interval);
    - ``alignment``, ``alignment_lo``, ``alignment_hi``: ``[S..S, P]`` (``aqi_collab / 100``);
    - ``cost``: ``[S..S, P]`` (``kl``, nats/token);
    - ``profiles``: the ``S**P`` profile names in C order (``outcome.ravel()`` order);
    - ``missing``: the names of profiles where at least one agent has no row.

    Missing values are NaN, never invented. A row's profile is matched by its lambdas (relative
    tolerance 1e-5, the precision of profile names), so ``"0x1"`` and ``"0.0x1.0"`` are one
    profile; rows off the grid or of other pairings are ignored.

    Raises
    ------
    ConfigError
        Bad ``pairing`` or ``lambdas``.
    DataError
        Missing columns; two rows for one (profile, agent); a row whose position or ``lam``
        contradicts its profile; rows of one profile that disagree on the outcome.
    """
    grid = _grid(lambdas)
    players = _players(pairing)
    _require(drift, PAYOFF_COLUMNS_NEEDED)
    where, sub = _locate(drift, pairing, grid, players, check=True)
    n_players = len(players)
    names = _profile_names(grid, n_players)
    shape = (len(grid),) * n_players

    dupes = [f"{names[int(np.ravel_multi_index(idx, shape))]} / {players[p]} ({len(rows)} rows)"
             for (idx, p), rows in sorted(where.items()) if len(rows) > 1]
    if dupes:
        raise DataError(
            f"phase-5 table, pairing {pairing_name(players)!r}: several rows for one (profile, agent) "
            f"(profile names are matched by their lambdas, so '0x1' and '0.0x1.0' are the same): "
            f"{_listed(dupes)}. Keep one row per profile and agent."
        )

    def col(name: str) -> np.ndarray:
        return pd.to_numeric(sub[name], errors="coerce").to_numpy(dtype=np.float64)

    aqi, aqi_lo, aqi_hi = col("aqi_collab"), col("aqi_collab_lo"), col("aqi_collab_hi")
    out_v, out_lo, out_hi, kl = col("outcome"), col("outcome_lo"), col("outcome_hi"), col("kl")

    nan = np.nan
    outcome = np.full(shape, nan)
    outcome_lo = np.full(shape, nan)
    outcome_hi = np.full(shape, nan)
    alignment = np.full(shape + (n_players,), nan)
    alignment_lo = np.full_like(alignment, nan)
    alignment_hi = np.full_like(alignment, nan)
    cost = np.full_like(alignment, nan)
    seen_outcome: dict[tuple[int, ...], tuple[float, str]] = {}
    for (idx, p), (row,) in where.items():
        alignment[idx + (p,)] = aqi[row] / 100.0
        alignment_lo[idx + (p,)] = aqi_lo[row] / 100.0
        alignment_hi[idx + (p,)] = aqi_hi[row] / 100.0
        cost[idx + (p,)] = kl[row]
        value = out_v[row]
        if idx in seen_outcome:
            first, who = seen_outcome[idx]
            same = (math.isnan(first) and math.isnan(value)) or abs(first - value) <= _OUTCOME_ATOL
            if not same:
                name = names[int(np.ravel_multi_index(idx, shape))]
                raise DataError(
                    f"phase-5 table, pairing {pairing_name(players)!r}, profile {name!r}: the rows of "
                    f"{who!r} and {players[p]!r} give different outcomes ({first!r} vs {value!r}); "
                    "one run has one outcome"
                )
            continue
        seen_outcome[idx] = (value, players[p])
        outcome[idx], outcome_lo[idx], outcome_hi[idx] = value, out_lo[row], out_hi[row]

    missing = [
        name for flat, name in enumerate(names)
        if any((tuple(int(i) for i in np.unravel_index(flat, shape)), p) not in where for p in range(n_players))
    ]
    return {
        "players": players,
        "lambdas": grid,
        "outcome": outcome,
        "outcome_lo": outcome_lo,
        "outcome_hi": outcome_hi,
        "alignment": alignment,
        "alignment_lo": alignment_lo,
        "alignment_hi": alignment_hi,
        "cost": cost,
        "profiles": names,
        "missing": missing,
    }


# ---------------------------------------------------------------------------------------------
# solving


def equilibrium_level(eq: eqlib.Equilibrium, lambdas: Sequence[float]) -> float:
    """The equilibrium's alignment level: each player's expected lambda, averaged over players.

    ``eq.strategies[p] [S]`` are probability vectors over ``lambdas [S]``.
    """
    grid = np.asarray(lambdas, dtype=np.float64)
    return float(np.mean([float(np.dot(x, grid)) for x in eq.strategies]))


def _levels(eqs: Sequence[eqlib.Equilibrium], grid: Sequence[float]) -> dict[str, float]:
    if not eqs:
        return {"mean": math.nan, "min": math.nan, "max": math.nan}
    levels = [equilibrium_level(e, grid) for e in eqs]
    return {"mean": float(np.mean(levels)), "min": float(np.min(levels)), "max": float(np.max(levels))}


def _weight(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_measured(inputs: dict[str, Any], pairing: str) -> None:
    """DataError naming the profiles that lack rows or hold NaN values."""
    if inputs["missing"]:
        raise DataError(
            f"pairing {pairing!r}: {len(inputs['missing'])} of {len(inputs['profiles'])} profile(s) of the "
            f"posture grid {inputs['lambdas']} were not measured by phase 5: {_listed(inputs['missing'])}. "
            "Run phase 5 for these profiles (driftlib.phases.game.solve.missing_profiles lists them); payoffs are "
            "never invented."
        )
    bad = []
    n_players = len(inputs["players"])
    for flat, name in enumerate(inputs["profiles"]):
        idx = np.unravel_index(flat, inputs["outcome"].shape)
        what = [] if np.isfinite(inputs["outcome"][idx]) else ["outcome"]
        for p in range(n_players):
            if not np.isfinite(inputs["alignment"][idx + (p,)]):
                what.append(f"aqi_collab of {inputs['players'][p]}")
            if not np.isfinite(inputs["cost"][idx + (p,)]):
                what.append(f"kl of {inputs['players'][p]}")
        if what:
            bad.append(f"{name} ({', '.join(what)})")
    if bad:
        raise DataError(
            f"pairing {pairing!r}: the phase-5 table holds NaN/inf values for {len(bad)} profile(s): "
            f"{_listed(bad)}. Re-run phase 5's scoring for them; payoffs are never invented."
        )


def _payoff_frame(inputs: dict[str, Any], payoffs: np.ndarray, eqs: Sequence[eqlib.Equilibrium],
                  optimum: tuple[int, ...]) -> pd.DataFrame:
    players, grid = inputs["players"], inputs["lambdas"]
    shape = inputs["outcome"].shape
    pure = {e.profile for e in eqs if e.pure}
    rows = []
    for flat, name in enumerate(inputs["profiles"]):
        idx = tuple(int(i) for i in np.unravel_index(flat, shape))
        row: dict[str, Any] = {"profile": name}
        for p, agent in enumerate(players):
            row[f"lam_{agent}"] = grid[idx[p]]
        row["outcome"] = float(inputs["outcome"][idx])
        row["outcome_lo"] = float(inputs["outcome_lo"][idx])
        row["outcome_hi"] = float(inputs["outcome_hi"][idx])
        for p, agent in enumerate(players):
            row[f"alignment_{agent}"] = float(inputs["alignment"][idx + (p,)])
            row[f"alignment_{agent}_lo"] = float(inputs["alignment_lo"][idx + (p,)])
            row[f"alignment_{agent}_hi"] = float(inputs["alignment_hi"][idx + (p,)])
        for p, agent in enumerate(players):
            row[f"cost_{agent}"] = float(inputs["cost"][idx + (p,)])
        for p, agent in enumerate(players):
            row[f"payoff_{agent}"] = float(payoffs[idx + (p,)])
        row["total"] = float(payoffs[idx].sum())
        row["pure_equilibrium"] = idx in pure
        row["social_optimum"] = idx == tuple(optimum)
        rows.append(row)
    return pd.DataFrame(rows)


def _eq_record(eq: eqlib.Equilibrium, players: Sequence[str], grid: Sequence[float],
               names: Sequence[str], shape: tuple[int, ...]) -> dict[str, Any]:
    keys = [f"{v:g}" for v in grid]
    prof = eq.profile
    return {
        "pure": bool(eq.pure),
        "method": eq.method,
        "profile": names[int(np.ravel_multi_index(prof, shape))] if prof is not None else None,
        "strategies": {a: {k: float(x[i]) for i, k in enumerate(keys)} for a, x in zip(players, eq.strategies)},
        "payoffs": {a: float(v) for a, v in zip(players, eq.payoffs)},
        "total": eq.total,
        "expected_lambda": {a: float(np.dot(x, grid)) for a, x in zip(players, eq.strategies)},
        "level": equilibrium_level(eq, grid),
    }


@dataclass(frozen=True)
class GameResult:
    """The posture game of one pairing, solved (:func:`solve_pairing`).

    Args:
        pairing: the pairing's name; ``players``: its ``P`` agents in turn order.
        lambdas: the ``S`` postures; ``profiles``: the ``S**P`` profile names.
        weights: ``{w_outcome, w_alignment, w_cost}``; ``formula``: the payoff, with the weights.
        solver: the solver settings, and ``complete``: whether every equilibrium is listed.
        equilibria: one record per equilibrium: ``pure``, ``method``, ``profile`` (name, or None
            when mixed), ``strategies`` ({agent: {lambda as ``"%g"``: probability}}), ``payoffs``
            ({agent: expected payoff}), ``total``, ``expected_lambda`` ({agent: expected lambda}),
            ``level``.
        n_equilibria, n_pure: counts; level: ``{mean, min, max}`` of the equilibria's alignment level.
        social_optimum: ``{profile, total, payoffs: {agent: payoff}}``.
        price_of_anarchy, welfare_gap: floats (NaN when undefined); notes: why, and other remarks.
        payoffs: one row per profile: ``profile``, ``lam_<agent>``, ``outcome`` (+ ``_lo``, ``_hi``),
            ``alignment_<agent>`` (+ ``_lo``, ``_hi``; 0-1 scale), ``cost_<agent>``,
            ``payoff_<agent>``, ``total``, ``pure_equilibrium``, ``social_optimum``.
        sensitivity: :data:`SENSITIVITY_COLUMNS`, one row per swept alignment weight.
    """

    pairing: str
    players: list[str]
    lambdas: list[float]
    profiles: list[str]
    weights: dict[str, float]
    formula: str
    solver: dict[str, Any]
    equilibria: list[dict[str, Any]]
    n_equilibria: int
    n_pure: int
    level: dict[str, float]
    social_optimum: dict[str, Any]
    price_of_anarchy: float
    welfare_gap: float
    notes: list[str]
    payoffs: pd.DataFrame
    sensitivity: pd.DataFrame

    def record(self) -> dict[str, Any]:
        """The JSON form (``equilibria.json``): every field but the frames, and the sensitivity
        frame as a list of records."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("payoffs", "sensitivity")}
        out["sensitivity"] = self.sensitivity.to_dict(orient="records")
        return out


def solve_pairing(
    drift: pd.DataFrame,
    pairing: str,
    lambdas: Sequence[float],
    *,
    w_outcome: float,
    w_alignment: float,
    w_cost: float,
    sensitivity_weights: Sequence[float] = (),
    seed: int = 0,
    n_starts: int = 50,
    max_iter: int = 20000,
    tol: float = 1e-9,
    eps: float = 1e-6,
) -> GameResult:
    """The posture game of one pairing: payoffs, equilibria, welfare and a weight sweep.

    Payoffs (``[S..S, P]``, :func:`driftlib.stats.equilibria.payoff_table`) follow :data:`FORMULA`
    from :func:`payoff_inputs`. Equilibria: :func:`driftlib.stats.equilibria.solve_game` (every pure
    one; for two players every mixed one of a non-degenerate game, for more players those that
    replicator dynamics reach from ``n_starts`` starts drawn with ``seed``). ``tol``, ``eps`` and
    ``max_iter`` go to the solver too. Welfare: the social optimum (best pure profile by total
    payoff), the price of anarchy (NaN with a note when undefined: the worst equilibrium's total
    is not positive) and the welfare gap. The sweep solves the game again for every
    ``w_alignment`` in ``sensitivity_weights`` (the other weights fixed) and reports the
    equilibrium alignment level (expected lambda, averaged over players; mean, min and max over
    the equilibria).

    Returns
    -------
    GameResult

    Raises
    ------
    DataError
        A profile of the grid is missing or holds NaN values (the message names them).
    ConfigError
        Bad weights, grid, pairing or solver settings.
    """
    weights = {k: _weight(k, v) for k, v in
               (("w_outcome", w_outcome), ("w_alignment", w_alignment), ("w_cost", w_cost))}
    if isinstance(sensitivity_weights, (str, bytes)) or not isinstance(sensitivity_weights, Iterable):
        raise ConfigError(f"sensitivity_weights must be a list of numbers, got {sensitivity_weights!r}")
    sweep = [_weight("sensitivity_weights: each weight", w) for w in sensitivity_weights]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    inputs = payoff_inputs(drift, pairing, lambdas)
    players, grid, names = inputs["players"], inputs["lambdas"], inputs["profiles"]
    name = pairing_name(players)
    _check_measured(inputs, name)
    shape = inputs["outcome"].shape
    n_players = len(players)
    solve_kwargs = {"tol": tol, "eps": eps, "n_starts": n_starts, "seed": int(seed), "max_iter": max_iter}

    def build(w_a: float) -> np.ndarray:
        return eqlib.payoff_table(inputs["outcome"], inputs["alignment"], inputs["cost"],
                                  w_outcome=weights["w_outcome"], w_alignment=w_a, w_cost=weights["w_cost"])

    payoffs = build(weights["w_alignment"])
    eqs = eqlib.solve_game(payoffs, **solve_kwargs)
    notes: list[str] = []
    if n_players > 2:
        notes.append(
            f"{n_players} players: every pure equilibrium is listed (enumeration), mixed ones only "
            f"where replicator dynamics from {n_starts + 1} starts reach them (some, not all)"
        )
    if any(e.method == "lemke_howson" for e in eqs):
        notes.append("degenerate game: it may have continua of equilibria, of which the extreme points "
                     "Lemke-Howson reached are listed")
    optimum, best = eqlib.social_optimum(payoffs)
    poa = gap = math.nan
    if eqs:
        try:
            poa = eqlib.price_of_anarchy(payoffs, eqs)
        except DataError as exc:
            notes.append(f"price of anarchy undefined (reported as NaN): {exc}")
        gap = eqlib.welfare_gap(payoffs, eqs)
    else:
        notes.append("no equilibrium found: price of anarchy, welfare gap and level are NaN")

    rows = []
    empty_weights = []
    for w in sweep:
        found = eqs if w == weights["w_alignment"] else eqlib.solve_game(build(w), **solve_kwargs)
        lv = _levels(found, grid)
        if not found:
            empty_weights.append(f"{w:g}")
        rows.append({"weight": w, "n_equilibria": len(found), "n_pure": sum(e.pure for e in found),
                     "level_mean": lv["mean"], "level_min": lv["min"], "level_max": lv["max"],
                     "configured": w == weights["w_alignment"]})
    if empty_weights:
        notes.append(f"sensitivity: no equilibrium found at w_alignment = {', '.join(empty_weights)} (level NaN)")
    sensitivity = pd.DataFrame(rows, columns=SENSITIVITY_COLUMNS)
    if sensitivity.empty:
        sensitivity = sensitivity.astype({"weight": float, "n_equilibria": int, "n_pure": int, "level_mean": float,
                                          "level_min": float, "level_max": float, "configured": bool})

    formula = (f"payoff_p(s) = {weights['w_outcome']:g} * outcome(s) + {weights['w_alignment']:g} * AQI_p(s) / 100 "
               f"- {weights['w_cost']:g} * KL_p(s)")
    return GameResult(
        pairing=name,
        players=players,
        lambdas=grid,
        profiles=names,
        weights=weights,
        formula=formula,
        solver={**solve_kwargs, "complete": n_players == 2},
        equilibria=[_eq_record(e, players, grid, names, shape) for e in eqs],
        n_equilibria=len(eqs),
        n_pure=sum(e.pure for e in eqs),
        level=_levels(eqs, grid),
        social_optimum={
            "profile": names[int(np.ravel_multi_index(optimum, shape))],
            "total": float(best),
            "payoffs": {a: float(v) for a, v in zip(players, payoffs[tuple(optimum)])},
        },
        price_of_anarchy=float(poa),
        welfare_gap=float(gap),
        notes=notes,
        payoffs=_payoff_frame(inputs, payoffs, eqs, optimum),
        sensitivity=sensitivity,
    )


# ---------------------------------------------------------------------------------------------
# files


def write_game(result: GameResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write :func:`solve_pairing`'s result into ``out_dir`` (created if needed), atomically.

    Files (:data:`GAME_FILES`): ``payoffs.csv`` (the ``payoffs`` frame), ``sensitivity.csv``
    (the ``sensitivity`` frame), ``equilibria.json`` (:meth:`GameResult.record`, strict JSON with
    NaN as null), ``payoff_matrix.png`` and ``equilibrium_sensitivity.png``. Returns {file name: path}.
    """
    from driftlib.phases.game import plots

    if not isinstance(result, GameResult):
        raise DataError(f"write_game: pass solve_pairing's GameResult, not a {type(result).__name__}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in GAME_FILES}
    write_table(result.payoffs, paths["payoffs.csv"])
    write_table(result.sensitivity, paths["sensitivity.csv"])
    write_json(result.record(), paths["equilibria.json"])
    plots.payoff_matrix(result.payoffs, paths["payoff_matrix.png"], players=result.players,
                        title=f"{result.pairing}: {result.formula}")
    plots.equilibrium_sensitivity(result.sensitivity, paths["equilibrium_sensitivity.png"],
                                  configured=result.weights.get("w_alignment"), lambdas=result.lambdas,
                                  title=result.pairing)
    return paths


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def summarize_games(json_paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One row per pairing from the ``equilibria.json`` files of :func:`write_game`.

    Columns :data:`SUMMARY_COLUMNS`: ``players`` and ``pure_equilibria`` are ``;``-joined names
    (the latter the pure equilibria's profiles); ``level_*`` is the equilibrium alignment level at
    the configured weights (mean, min and max over the equilibria); NaN where undefined.
    """
    rows = []
    for path in json_paths:
        rec = read_json(path, producer="solve_game")
        try:
            rows.append({
                "pairing": rec["pairing"],
                "players": ";".join(rec["players"]),
                "n_equilibria": int(rec["n_equilibria"]),
                "n_pure": int(rec["n_pure"]),
                "pure_equilibria": ";".join(e["profile"] for e in rec["equilibria"] if e["pure"]),
                "social_optimum": rec["social_optimum"]["profile"],
                "social_optimum_total": _num(rec["social_optimum"]["total"]),
                "price_of_anarchy": _num(rec["price_of_anarchy"]),
                "welfare_gap": _num(rec["welfare_gap"]),
                "w_outcome": _num(rec["weights"]["w_outcome"]),
                "w_alignment": _num(rec["weights"]["w_alignment"]),
                "w_cost": _num(rec["weights"]["w_cost"]),
                "level_mean": _num(rec["level"]["mean"]),
                "level_min": _num(rec["level"]["min"]),
                "level_max": _num(rec["level"]["max"]),
            })
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"{path}: not an equilibria.json of write_game (missing {exc}). "
                                "Re-run the rule that writes it (solve_game).") from None
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
