"""Commands of the data step: ``prepare-world``, ``prepare-prompts``, ``prepare-pairs``."""

from __future__ import annotations

import argparse
import json

from driftlib.cli.common import command, none_or_int


def prepare_world(a: argparse.Namespace) -> None:
    from driftlib.phases.data.prepare import prepare_world

    prepare_world(spec=json.loads(a.spec), seed=a.seed, out=a.out)


def prepare_prompts(a: argparse.Namespace) -> None:
    from driftlib.phases.data.prepare import prepare_prompts

    prepare_prompts(source=a.source, split=a.split, per_group=a.per_group, axioms=a.axioms, seed=a.seed, out=a.out,
                    calibration_out=a.calibration_out, calibration_per_group=a.calibration_per_group,
                    calibration_source=a.calibration_source)


def prepare_pairs(a: argparse.Namespace) -> None:
    from driftlib.phases.data.prepare import prepare_pairs

    prepare_pairs(source=a.source, data_dir=a.data_dir, split=a.split, n=a.n, seed=a.seed, out=a.out)


def register(sub) -> None:
    p = command(sub, "prepare-world", prepare_world, "write the synthetic world's files (docs/synthetic_world.md)")
    p.add_argument("--spec", default="{}", help="the world's sizes as a JSON object (WorldSpec fields but seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)

    p = command(sub, "prepare-prompts", prepare_prompts, "load LITMUS-form prompts and sample n per (axiom, label)")
    p.add_argument("--source", default="bundled", help="bundled | FILE | hf:<dataset id>")
    p.add_argument("--split", default="train")
    p.add_argument("--per-group", type=none_or_int, default=20)
    p.add_argument("--axioms", nargs="+", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--calibration-out", default=None, help="also write calibration prompts, disjoint from --out's")
    p.add_argument("--calibration-per-group", type=none_or_int, default=None, help="(none: every remaining row)")
    p.add_argument("--calibration-source", default=None, help="draw the calibration prompts from this source "
                   "(default: --source)")

    p = command(sub, "prepare-pairs", prepare_pairs, "load hh-rlhf-form preference pairs and sample n")
    p.add_argument("--source", default="bundled", help="bundled | FILE | hf:Anthropic/hh-rlhf")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=none_or_int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
