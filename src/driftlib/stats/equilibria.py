"""Nash equilibria of the alignment-posture game (phase 6).

Numerical code only (numpy in, numpy out; no torch, no I/O). A game with ``P`` players, player
``p`` having ``S_p`` pure strategies, is one payoff array

    ``payoffs [S_1, ..., S_P, P]``,  ``payoffs[s_1, ..., s_P, p]`` = player ``p``'s payoff,

and a mixed profile is a tuple of ``P`` probability vectors (``strategies[p]`` has shape
``[S_p]``; a pure strategy is one-hot). Payoffs come from measured runs through
:func:`payoff_table`, which refuses unmeasured (NaN) profiles instead of inventing payoffs.

Solvers:

- :func:`pure_equilibria`: every pure equilibrium, by enumeration of all profiles (any ``P``).
- :func:`mixed_equilibria`: for ``P == 2``, nashpy's support enumeration (all equilibria of a
  non-degenerate game); when the game is degenerate (nashpy warns or finds none) Lemke-Howson from
  every initial dropped label is added. For ``P != 2``, :func:`replicator_equilibria` (finds SOME
  equilibria, not all).
- :func:`solve_game`: pure enumeration plus :func:`mixed_equilibria`, deduplicated.

Tolerances are relative to the payoff table's range ``R = max(payoffs) - min(payoffs)`` (all
players, all profiles), so no check depends on the payoff unit or on a constant shift of the
payoffs: "``p`` gains at most ``eps``" means a gain of at most ``eps * R``. When ``R == 0`` every
profile is an equilibrium.

Welfare: :func:`social_optimum` (best pure profile by total payoff), :func:`price_of_anarchy`
(ratio; defined only when the worst equilibrium's total is positive) and :func:`welfare_gap`
(difference; always defined and shift-invariant per player-sum).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from driftlib.core.errors import ConfigError, DataError

__all__ = [
    "Equilibrium",
    "METHODS",
    "payoff_table",
    "expected_payoffs",
    "is_nash",
    "nash_gap",
    "pure_equilibria",
    "mixed_equilibria",
    "replicator_equilibria",
    "solve_game",
    "social_optimum",
    "price_of_anarchy",
    "welfare_gap",
    "sensitivity",
]

METHODS: tuple[str, ...] = ("enumeration", "support_enumeration", "lemke_howson", "replicator")

#: two equilibria are the same when every probability differs by at most this much
SAME_ATOL = 1e-5
#: replicator rest points: probabilities below this are set to 0 before the final check
_POLISH_BELOW = 1e-6
#: most profiles listed by name in an error message
_MAX_LISTED = 20
#: a probability vector may miss a sum of 1 by this much (and go this far below 0)
_PROB_ATOL = 1e-6


@dataclass(frozen=True, eq=False)
class Equilibrium:
    """One (possibly approximate) Nash equilibrium.

    ``strategies``: one probability vector per player (``strategies[p]`` shape ``[S_p]``,
    read-only; one-hot for a pure equilibrium); ``payoffs [P]``: each player's expected payoff;
    ``pure``: every vector is one-hot; ``method``: the solver that found it (:data:`METHODS`).
    Compared by identity (``eq=False``): compare strategies with a tolerance instead.
    """

    strategies: tuple[np.ndarray, ...]
    payoffs: np.ndarray
    pure: bool
    method: str

    @property
    def profile(self) -> tuple[int, ...] | None:
        """The pure profile ``(s_1, ..., s_P)`` of a pure equilibrium, else ``None``."""
        if not self.pure:
            return None
        return tuple(int(np.argmax(x)) for x in self.strategies)

    @property
    def total(self) -> float:
        """Sum of the players' expected payoffs (the equilibrium's welfare)."""
        return float(np.sum(self.payoffs))


# ---------------------------------------------------------------------------------------------
# validation


def _fmt_profile(profile: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in profile) + ")"


def _list_profiles(items: Sequence[str]) -> str:
    shown = "; ".join(items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown += f"; ... and {len(items) - _MAX_LISTED} more"
    return shown


def _check_payoffs(payoffs: Any, name: str = "payoffs") -> np.ndarray:
    """``payoffs`` as float64 ``[S_1, ..., S_P, P]``; DataError on a bad shape or a NaN/inf."""
    arr = np.asarray(payoffs, dtype=np.float64)
    if arr.ndim < 2 or arr.shape[-1] != arr.ndim - 1:
        raise DataError(
            f"{name}: expected shape [S_1, ..., S_P, P] with P = number of strategy axes, "
            f"got {arr.shape}"
        )
    if any(s < 1 for s in arr.shape[:-1]):
        raise DataError(f"{name}: every player needs at least one strategy, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        items = []
        for prof in np.argwhere(bad.any(axis=-1)):
            players = ", ".join(str(int(p)) for p in np.flatnonzero(bad[tuple(prof)]))
            items.append(f"{_fmt_profile(prof)}: player(s) {players}")
        raise DataError(
            f"{name}: {len(items)} profile(s) have NaN/inf payoffs (not measured?): "
            f"{_list_profiles(items)}"
        )
    return arr


def _check_strategies(payoffs: np.ndarray, strategies: Sequence[Any]) -> tuple[np.ndarray, ...]:
    """Each player's probability vector as float64 ``[S_p]``; DataError when one is not."""
    shape = payoffs.shape[:-1]
    if len(strategies) != len(shape):
        raise DataError(f"strategies: expected {len(shape)} vectors (one per player), got {len(strategies)}")
    out = []
    for p, (x, s) in enumerate(zip(strategies, shape)):
        v = np.asarray(x, dtype=np.float64)
        if v.shape != (s,):
            raise DataError(f"strategies[{p}]: expected shape ({s},), got {v.shape}")
        if not np.all(np.isfinite(v)) or v.min() < -_PROB_ATOL or abs(v.sum() - 1.0) > _PROB_ATOL:
            raise DataError(f"strategies[{p}]: not a probability vector: {v.tolist()}")
        out.append(v)
    return tuple(out)


def _payoff_range(payoffs: np.ndarray) -> float:
    return float(payoffs.max() - payoffs.min())


def _is_number(value: Any) -> bool:
    """A finite real number (bools excluded)."""
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float, np.floating, np.integer))
        and math.isfinite(value)
    )


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------
# payoffs


def payoff_table(
    outcome: Any,
    alignment: Any,
    steering_cost: Any,
    *,
    w_outcome: float,
    w_alignment: float,
    w_cost: float,
) -> np.ndarray:
    """The game's payoff array from measured quantities.

    ``payoff[s, p] = w_outcome * outcome[s] + w_alignment * alignment[s, p]
    - w_cost * steering_cost[s, p]`` for every profile ``s = (s_1, ..., s_P)``.

    ``outcome [S_1..S_P]``: the shared task outcome of the profile; ``alignment [S_1..S_P, P]``:
    each agent's measured alignment in that profile; ``steering_cost [S_1..S_P, P]``: each agent's
    capability cost of its posture. Returns ``[S_1..S_P, P]`` float64.

    A NaN (or inf) anywhere means the profile was not measured: a DataError lists every such
    profile and which quantity is missing, whatever the weights (payoffs are never invented).
    """
    weights = {"w_outcome": w_outcome, "w_alignment": w_alignment, "w_cost": w_cost}
    for key, w in weights.items():
        if not _is_number(w):
            raise ConfigError(f"payoff_table: {key} must be a finite number, got {w!r}")
    out = np.asarray(outcome, dtype=np.float64)
    ali = np.asarray(alignment, dtype=np.float64)
    cost = np.asarray(steering_cost, dtype=np.float64)
    n_players = out.ndim
    if n_players < 1:
        raise DataError("payoff_table: outcome must have one axis per player, got a scalar")
    want = out.shape + (n_players,)
    for name, arr in (("alignment", ali), ("steering_cost", cost)):
        if arr.shape != want:
            raise DataError(
                f"payoff_table: {name} must have shape {want} (outcome's shape plus one axis of "
                f"{n_players} players), got {arr.shape}"
            )
    bad_out = ~np.isfinite(out)
    bad_ali = ~np.isfinite(ali)
    bad_cost = ~np.isfinite(cost)
    bad = bad_out | bad_ali.any(-1) | bad_cost.any(-1)
    if bad.any():
        items = []
        for prof in np.argwhere(bad):
            idx = tuple(prof)
            what = ["outcome"] if bad_out[idx] else []
            what += [f"alignment[player {int(p)}]" for p in np.flatnonzero(bad_ali[idx])]
            what += [f"steering_cost[player {int(p)}]" for p in np.flatnonzero(bad_cost[idx])]
            items.append(f"{_fmt_profile(prof)}: {', '.join(what)}")
        raise DataError(
            f"payoff_table: {len(items)} of {out.size} profile(s) were not measured (NaN/inf), and "
            f"payoffs are never invented: {_list_profiles(items)}. Measure these profiles or drop "
            "the strategies involved."
        )
    return (
        float(w_outcome) * out[..., None]
        + float(w_alignment) * ali
        - float(w_cost) * cost
    )


def _deviation_payoffs(payoffs: np.ndarray, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Pure-strategy payoffs against the others' mixtures, for a batch of ``n`` profiles.

    ``payoffs [S_1..S_P, P]``, ``xs[p] [n, S_p]``; returns ``f[p] [n, S_p]`` with
    ``f[p][k, i]`` = player ``p``'s expected payoff from pure ``i`` when every other player ``q``
    plays ``xs[q][k]``.
    """
    n_players = payoffs.ndim - 1
    n = xs[0].shape[0]
    out = []
    for p in range(n_players):
        arr = np.moveaxis(payoffs[..., p], p, 0)  # [S_p, others in order]
        others = [q for q in range(n_players) if q != p]
        if not others:
            out.append(np.broadcast_to(arr, (n, arr.shape[0])).copy())
            continue
        # contract the last axis each time: first without a batch axis, then batched
        arr = np.tensordot(xs[others[-1]], arr, axes=([1], [arr.ndim - 1]))  # [n, S_p, ...]
        for q in reversed(others[:-1]):
            arr = np.einsum("n...k,nk->n...", arr, xs[q])
        out.append(arr)
    return out


def expected_payoffs(payoffs: Any, strategies: Sequence[Any]) -> np.ndarray:
    """Each player's expected payoff ``[P]`` under the mixed profile ``strategies``.

    ``payoffs [S_1..S_P, P]``; ``strategies[p] [S_p]`` probability vectors.
    """
    arr = _check_payoffs(payoffs)
    xs = _check_strategies(arr, strategies)
    u = arr
    for x in xs:  # contract the leading strategy axis each time
        u = np.tensordot(x, u, axes=([0], [0]))
    return np.asarray(u, dtype=np.float64)


def nash_gap(payoffs: Any, strategies: Sequence[Any]) -> float:
    """The largest gain any player gets by deviating to a pure strategy (absolute units, >= 0).

    ``payoffs [S_1..S_P, P]``; ``strategies[p] [S_p]``. Zero exactly at a Nash equilibrium.
    """
    arr = _check_payoffs(payoffs)
    xs = _check_strategies(arr, strategies)
    return float(_gaps(arr, [x[None, :] for x in xs])[0])


def _gaps(payoffs: np.ndarray, xs: Sequence[np.ndarray]) -> np.ndarray:
    """Nash gap ``[n]`` of a batch of profiles ``xs[p] [n, S_p]``."""
    f = _deviation_payoffs(payoffs, xs)
    per_player = [fp.max(axis=1) - np.einsum("ni,ni->n", fp, x) for fp, x in zip(f, xs)]
    return np.maximum(np.max(np.stack(per_player), axis=0), 0.0)


def is_nash(payoffs: Any, strategies: Sequence[Any], *, eps: float = 1e-7) -> bool:
    """Whether ``strategies`` is an ``eps``-Nash equilibrium of ``payoffs``.

    True when no player gains more than ``eps * R`` by deviating to any pure strategy (enough for
    mixed deviations too), with ``R = max(payoffs) - min(payoffs)``. ``payoffs [S_1..S_P, P]``;
    ``strategies[p] [S_p]``.
    """
    if not (math.isfinite(eps) and eps >= 0):
        raise ConfigError(f"is_nash: eps must be a finite number >= 0, got {eps!r}")
    arr = _check_payoffs(payoffs)
    return nash_gap(arr, strategies) <= eps * _payoff_range(arr)


# ---------------------------------------------------------------------------------------------
# solvers


def _make(payoffs: np.ndarray, xs: Sequence[np.ndarray], method: str) -> Equilibrium:
    strategies = []
    for x in xs:
        v = np.array(x, dtype=np.float64)
        v.setflags(write=False)
        strategies.append(v)
    pure = all(np.count_nonzero(v) == 1 and np.max(v) == 1.0 for v in strategies)
    pay = expected_payoffs(payoffs, strategies)
    pay.setflags(write=False)
    return Equilibrium(strategies=tuple(strategies), payoffs=pay, pure=pure, method=method)


def _same(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> bool:
    return all(np.max(np.abs(x - y)) <= SAME_ATOL for x, y in zip(a, b))


def _dedup(found: Sequence[Equilibrium], keep: Sequence[Equilibrium] = ()) -> list[Equilibrium]:
    """``found`` without the entries equal (within :data:`SAME_ATOL`) to an earlier one or to
    one in ``keep``; first occurrences kept, order kept."""
    out: list[Equilibrium] = []
    for eq in found:
        if not any(_same(eq.strategies, other.strategies) for other in (*keep, *out)):
            out.append(eq)
    return out


def _clean(x: np.ndarray, below: float) -> np.ndarray | None:
    """A probability vector with entries ``<= below`` set to 0 and renormalised (None if bad)."""
    v = np.asarray(x, dtype=np.float64).ravel()
    if not np.all(np.isfinite(v)):
        return None
    v = np.where(v <= below, 0.0, v)
    total = v.sum()
    if total <= 0:
        return None
    return v / total


def pure_equilibria(payoffs: Any, *, tol: float = 1e-9) -> list[Equilibrium]:
    """Every pure Nash equilibrium, by enumerating all profiles (any number of players).

    A profile is an equilibrium when each player's payoff is at least its best deviation minus
    ``tol * R`` (weak inequalities: ties count as best responses; ``R`` the payoff range).
    ``payoffs [S_1..S_P, P]``. Returns the equilibria in lexicographic profile order, each with
    ``method == "enumeration"``.
    """
    if not (math.isfinite(tol) and tol >= 0):
        raise ConfigError(f"pure_equilibria: tol must be a finite number >= 0, got {tol!r}")
    arr = _check_payoffs(payoffs)
    atol = tol * _payoff_range(arr)
    shape = arr.shape[:-1]
    ok = np.ones(shape, dtype=bool)
    for p in range(len(shape)):
        u = arr[..., p]
        ok &= u >= u.max(axis=p, keepdims=True) - atol
    out = []
    for prof in np.argwhere(ok):
        xs = [np.eye(s)[int(i)] for s, i in zip(shape, prof)]
        out.append(_make(arr, xs, "enumeration"))
    return out


def _nashpy_game(arr: np.ndarray):
    try:
        import nashpy
    except ImportError as exc:  # pragma: no cover - nashpy is a declared dependency
        raise ConfigError("two-player mixed equilibria need nashpy: pip install 'nashpy>=0.0.41'") from exc
    return nashpy.Game(arr[..., 0], arr[..., 1])


def _two_player(arr: np.ndarray, *, tol: float, eps: float) -> list[Equilibrium]:
    game = _nashpy_game(arr)
    atol = eps * _payoff_range(arr)
    found: list[Equilibrium] = []
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        pairs = list(game.support_enumeration(tol=tol))
    degenerate = not pairs or any("degenerate" in str(w.message) for w in caught)
    for pair in pairs:
        xs = [_clean(x, tol) for x in pair]
        if all(x is not None for x in xs) and _gaps(arr, [x[None] for x in xs])[0] <= atol:
            found.append(_make(arr, xs, "support_enumeration"))
    found = _dedup(found)
    if not degenerate:
        return found
    lh: list[Equilibrium] = []
    for label in range(sum(arr.shape[:2])):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                pair = game.lemke_howson(initial_dropped_label=label)
            except Exception:  # nashpy can fail on a degenerate tableau; other labels may work
                continue
        if len(pair) != 2 or any(np.shape(x) != (s,) for x, s in zip(pair, arr.shape[:2])):
            continue
        xs = [_clean(x, tol) for x in pair]
        if all(x is not None for x in xs) and _gaps(arr, [x[None] for x in xs])[0] <= atol:
            lh.append(_make(arr, xs, "lemke_howson"))
    return found + _dedup(lh, keep=found)


def replicator_equilibria(
    payoffs: Any,
    *,
    n_starts: int = 50,
    seed: int = 0,
    max_iter: int = 20000,
    tol: float = 1e-9,
    eps: float = 1e-6,
    step: float = 0.5,
) -> list[Equilibrium]:
    """SOME Nash equilibria of a game with any number of players, by replicator dynamics.

    Runs the multi-population replicator dynamics ``dx_pi/dt = x_pi (f_pi(x_-p) - x_p . f_p)`` from
    the uniform profile and ``n_starts`` interior starts drawn uniformly from each simplex
    (``numpy.random.default_rng(seed)``, Dirichlet(1)). The discretisation is the exponential
    (multiplicative-weights) step ``x_p <- x_p * exp(eta_p f_p) / norm`` with
    ``eta_p = step / R_p`` (``R_p`` player ``p``'s payoff range), computed in log space, whose
    small-step limit is the replicator ODE; it keeps every start in the simplex interior and is
    unit- and shift-free. A start stops when its Nash gap is ``<= tol * R`` or after ``max_iter``
    steps. Its end point has probabilities ``<= 1e-6`` zeroed and renormalised; the cleaned point
    (else the raw one) is kept when it is an ``eps``-Nash equilibrium (no player gains more than
    ``eps * R`` by a pure deviation). Kept points are deduplicated (:data:`SAME_ATOL`).

    Not all equilibria: rest points that attract no interior start are never reached, and under
    these dynamics only strict (pure) equilibria are asymptotically stable, so mixed equilibria
    (saddles or centres) are mostly missed, and an equilibrium may be reported only to within
    ``eps``. Use :func:`pure_equilibria` for the complete set of pure equilibria.

    ``payoffs [S_1..S_P, P]``; returns equilibria with ``method == "replicator"``, pure ones first.
    """
    arr = _check_payoffs(payoffs)
    if isinstance(n_starts, bool) or not isinstance(n_starts, (int, np.integer)) or n_starts < 0:
        raise ConfigError(f"replicator: n_starts must be an integer >= 0, got {n_starts!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ConfigError(f"replicator: max_iter must be an integer >= 1, got {max_iter!r}")
    step = _positive("replicator: step", step)
    if not (math.isfinite(tol) and tol >= 0 and math.isfinite(eps) and eps >= 0):
        raise ConfigError(f"replicator: tol and eps must be finite numbers >= 0, got {tol!r}, {eps!r}")
    shape = arr.shape[:-1]
    n_players = len(shape)
    big_r = _payoff_range(arr)
    rng = np.random.default_rng(seed)
    n = int(n_starts) + 1
    logits = []
    for s in shape:
        starts = np.vstack([np.full((1, s), 1.0 / s), rng.dirichlet(np.ones(s), size=n - 1)])
        logits.append(np.log(starts))
    etas = []
    for p in range(n_players):
        r_p = _payoff_range(arr[..., p])
        etas.append(step / r_p if r_p > 0 else 0.0)

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    xs = [softmax(z) for z in logits]
    done = np.zeros(n, dtype=bool)
    for _ in range(int(max_iter)):
        f = _deviation_payoffs(arr, xs)
        gaps = np.max(
            np.stack([fp.max(axis=1) - np.einsum("ni,ni->n", fp, x) for fp, x in zip(f, xs)]), axis=0
        )
        done |= gaps <= tol * big_r
        if done.all():
            break
        active = ~done
        for p in range(n_players):
            z = logits[p]
            z[active] += etas[p] * f[p][active]
            z -= z.max(axis=1, keepdims=True)
            xs[p] = softmax(z)
    found = []
    for k in range(n):
        raw = [x[k] for x in xs]
        cleaned = [_clean(x, _POLISH_BELOW) for x in raw]
        for cand in (cleaned, raw):
            if all(c is not None for c in cand) and _gaps(arr, [c[None] for c in cand])[0] <= eps * big_r:
                found.append(_make(arr, cand, "replicator"))
                break
    found = _dedup(found)
    return sorted(found, key=lambda e: not e.pure)


def mixed_equilibria(
    payoffs: Any,
    *,
    tol: float = 1e-9,
    n_starts: int = 50,
    seed: int = 0,
    max_iter: int = 20000,
    eps: float = 1e-6,
) -> list[Equilibrium]:
    """Mixed (and pure) Nash equilibria; all of them for a non-degenerate two-player game.

    ``P == 2``: nashpy support enumeration (``method == "support_enumeration"``), which finds
    every equilibrium of a non-degenerate game (cost grows as ``2^(S_1 + S_2)``). When the game is
    degenerate (nashpy warns, an even number of equilibria, or finds none), Lemke-Howson from every
    initial dropped label is run too and its new equilibria are added
    (``method == "lemke_howson"``); a degenerate game can have continua of equilibria, of which
    these are some extreme points only. ``tol``: nashpy's support tolerance, and probabilities
    ``<= tol`` are set to 0. Every result is checked to be an ``eps``-Nash equilibrium (gain at most
    ``eps * R``); deduplicated within :data:`SAME_ATOL`.

    ``P != 2``: :func:`replicator_equilibria` with ``n_starts``, ``seed``, ``max_iter``, ``tol``
    and ``eps``, which finds SOME equilibria, not all (mostly the strict pure ones).

    ``payoffs [S_1..S_P, P]``.
    """
    arr = _check_payoffs(payoffs)
    if not (math.isfinite(tol) and tol >= 0 and math.isfinite(eps) and eps >= 0):
        raise ConfigError(f"mixed_equilibria: tol and eps must be finite numbers >= 0, got {tol!r}, {eps!r}")
    if arr.ndim - 1 == 2:
        return _two_player(arr, tol=tol, eps=eps)
    return replicator_equilibria(arr, n_starts=n_starts, seed=seed, max_iter=max_iter, tol=tol, eps=eps)


def solve_game(payoffs: Any, **kwargs: Any) -> list[Equilibrium]:
    """All pure equilibria (enumeration) followed by the new ones from :func:`mixed_equilibria`.

    ``payoffs [S_1..S_P, P]``; ``kwargs`` go to :func:`mixed_equilibria`. An equilibrium found by
    both keeps ``method == "enumeration"``.
    """
    pure = pure_equilibria(payoffs)
    return pure + _dedup(mixed_equilibria(payoffs, **kwargs), keep=pure)


# ---------------------------------------------------------------------------------------------
# welfare


def social_optimum(payoffs: Any) -> tuple[tuple[int, ...], float]:
    """The pure profile with the largest total payoff, and that total.

    ``payoffs [S_1..S_P, P]``. Ties go to the first profile in lexicographic order. (No mixed
    profile does better: its total is an average of pure totals.)
    """
    arr = _check_payoffs(payoffs)
    totals = arr.sum(axis=-1)
    flat = int(np.argmax(totals))
    prof = tuple(int(i) for i in np.unravel_index(flat, totals.shape))
    return prof, float(totals.flat[flat])


def _worst_total(arr: np.ndarray, equilibria: Sequence[Equilibrium], who: str) -> float:
    if not equilibria:
        raise DataError(f"{who}: no equilibria given")
    return min(float(expected_payoffs(arr, eq.strategies).sum()) for eq in equilibria)


def price_of_anarchy(payoffs: Any, equilibria: Sequence[Equilibrium]) -> float:
    """Social optimum's total payoff divided by the worst equilibrium's total payoff (>= 1).

    Totals are recomputed from ``payoffs [S_1..S_P, P]`` and each equilibrium's strategies. A ratio
    only means something for positive welfare, so it is defined only when the worst
    equilibrium's total is > 0 (then the optimum's is too); otherwise a DataError (never inf or
    NaN). The ratio changes when a constant is added to the payoffs, and the payoffs of
    :func:`payoff_table` can be negative: use :func:`welfare_gap` (the difference) there.
    """
    arr = _check_payoffs(payoffs)
    worst = _worst_total(arr, equilibria, "price_of_anarchy")
    _, best = social_optimum(arr)
    if worst <= 0:
        raise DataError(
            f"price_of_anarchy: the worst equilibrium's total payoff is {worst:g} <= 0, so the "
            f"ratio (optimum {best:g} / worst) is undefined; use welfare_gap (the difference) or "
            "shift the payoffs to be positive"
        )
    return best / worst


def welfare_gap(payoffs: Any, equilibria: Sequence[Equilibrium]) -> float:
    """Social optimum's total payoff minus the worst equilibrium's total payoff (>= 0).

    Always defined; unchanged when a constant is added to every payoff. ``payoffs [S_1..S_P, P]``.
    """
    arr = _check_payoffs(payoffs)
    worst = _worst_total(arr, equilibria, "welfare_gap")
    _, best = social_optimum(arr)
    return best - worst


# ---------------------------------------------------------------------------------------------
# sensitivity


def sensitivity(
    build_payoffs: Callable[[float], np.ndarray],
    weights: Sequence[float],
    *,
    summary: Callable[[list[Equilibrium]], float],
    solve_kwargs: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """How the equilibria move as one weight of the payoff formula moves.

    For each ``w`` in ``weights``: ``payoffs = build_payoffs(w)`` (``[S_1..S_P, P]``), solved with
    :func:`solve_game` (pure enumeration + :func:`mixed_equilibria`, ``solve_kwargs`` passed on).
    Returns one row per weight, in the given order, with columns ``weight``, ``n_equilibria``,
    ``n_pure`` and ``summary`` (``summary(equilibria)``, e.g. the mean probability of the aligned
    posture; NaN without calling ``summary`` when no equilibrium was found).
    """
    ws = list(weights)
    if not ws:
        raise ConfigError("sensitivity: weights is empty")
    rows = []
    for w in ws:
        if not _is_number(w):
            raise ConfigError(f"sensitivity: every weight must be a finite number, got {w!r}")
        eqs = solve_game(build_payoffs(float(w)), **dict(solve_kwargs or {}))
        value = float(summary(eqs)) if eqs else float("nan")
        rows.append(
            {
                "weight": float(w),
                "n_equilibria": len(eqs),
                "n_pure": sum(e.pure for e in eqs),
                "summary": value,
            }
        )
    return pd.DataFrame(rows, columns=["weight", "n_equilibria", "n_pure", "summary"])
