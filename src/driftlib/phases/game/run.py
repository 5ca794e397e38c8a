"""Phase 6 runs: ``driftlib solve-game`` (the equilibria of one pairing's posture game, from the
phase-5 drift records of every profile of its grid) and ``driftlib summarize-games``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from driftlib.core.artifacts import write_table
from driftlib.core.records import collect_drift

log = logging.getLogger(__name__)

__all__ = ["solve_game", "summarize"]


def solve_game(*, drift: Sequence[str], pairing: str, lambdas: Sequence[float], w_outcome: float,
               w_alignment: float, w_cost: float, sensitivity: Sequence[float], seed: int,
               out_dir: str | Path) -> None:
    """Solve the pairing's game and write its payoff table, equilibria, sensitivity and plots."""
    from driftlib.phases.game.solve import solve_pairing, write_game

    result = solve_pairing(collect_drift(drift), pairing, lambdas, w_outcome=w_outcome, w_alignment=w_alignment,
                           w_cost=w_cost, sensitivity_weights=sensitivity, seed=seed)
    write_game(result, out_dir)
    pure = [e["profile"] for e in result.equilibria if e["pure"]]
    log.info("%s: %d equilibria (pure: %s), social optimum %s, price of anarchy %s", pairing, result.n_equilibria,
             ", ".join(pure) or "none", result.social_optimum["profile"], result.price_of_anarchy)


def summarize(*, games: Sequence[str], out: str | Path) -> None:
    """One row per pairing (``equilibria_summary``)."""
    from driftlib.phases.game.solve import summarize_games

    write_table(summarize_games(games), out)
