"""Phase 6 commands: ``solve-game``, ``summarize-games``."""

from __future__ import annotations

import argparse

from driftlib.cli.common import command


def solve_game(a: argparse.Namespace) -> None:
    from driftlib.phases.game.run import solve_game

    solve_game(drift=a.drift, pairing=a.pairing, lambdas=a.lambdas, w_outcome=a.w_outcome, w_alignment=a.w_alignment,
               w_cost=a.w_cost, sensitivity=a.sensitivity, seed=a.seed, out_dir=a.out_dir)


def summarize_games(a: argparse.Namespace) -> None:
    from driftlib.phases.game.run import summarize

    summarize(games=a.games, out=a.out)


def register(sub) -> None:
    p = command(sub, "solve-game", solve_game, "phase 6: equilibria of a pairing's posture game from phase-5 results")
    p.add_argument("--drift", nargs="+", required=True, help="score-collab outputs of every profile of the grid")
    p.add_argument("--pairing", required=True, help="agents joined by '+', in turn order")
    p.add_argument("--lambdas", type=float, nargs="+", required=True, help="the postures")
    p.add_argument("--w-outcome", type=float, default=1.0)
    p.add_argument("--w-alignment", type=float, default=1.0)
    p.add_argument("--w-cost", type=float, default=1.0)
    p.add_argument("--sensitivity", type=float, nargs="*", default=[], help="alignment weights to solve again")
    p.add_argument("--seed", type=int, default=0, help="seeds the replicator starts (more than two players)")
    p.add_argument("--out-dir", required=True)

    p = command(sub, "summarize-games", summarize_games, "phase 6 summary: one row per pairing")
    p.add_argument("--games", nargs="+", required=True, help="equilibria.json files (solve-game)")
    p.add_argument("--out", required=True)
