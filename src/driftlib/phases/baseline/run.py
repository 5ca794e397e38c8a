"""Phase 1 behaviour: ``driftlib answer``, short greedy answers of one model variant to every
evaluation prompt, classified as refusal or not.

The prompt is rendered as one user turn through the chat template of the model key's aligned
variant (:func:`driftlib.model.render.render_prompts`), so base and aligned read the same string; a
tokenizer without a template gets the documented plain template. The answer is the greedy
continuation (the KV cache, no sampling) cut at the first end-of-sequence token, decoded without
special tokens. The classifier is :class:`driftlib.stats.behaviour.StringMatchClassifier` (XSTest's
cheap baseline; a judge model plugs in through :class:`~driftlib.stats.behaviour.JudgeClassifier`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from driftlib.core.artifacts import read_table, write_table
from driftlib.datasets.prompts import PROMPT_COLUMNS

if TYPE_CHECKING:  # annotations only; the functions import what they run
    from driftlib.model.source import ModelSource

log = logging.getLogger(__name__)

__all__ = ["answer"]


def answer(*, source: ModelSource, name: str, variant: str, prompts: str | Path,
           max_new_tokens: int, batch_size: int, max_length: int, out: str | Path) -> None:
    """Greedy answers of ``source`` to every prompt of ``prompts``, with the refusal verdicts.

    Args:
        source: the model variant; ``source.template`` names the folder or hub id whose tokenizer's
            chat template renders the prompts (the aligned variant's; None: the variant's own).
        name, variant: the model key and variant (recorded).
        prompts: the evaluation prompts (``prepare-prompts``).
        max_new_tokens, batch_size, max_length: generation settings.
        out: the answers table (:data:`driftlib.steer.runs.ANSWER_COLUMNS`).
    """
    from driftlib.steer.runs import answer_rows

    table, meta = read_table(prompts, columns=PROMPT_COLUMNS, producer="prepare_prompts")
    model, tokenizer = source.load()
    df = answer_rows(model, tokenizer, table, None, [0.0], name=name, variant=variant, max_new_tokens=max_new_tokens,
                     batch_size=batch_size, max_length=max_length, template=source.load_template())
    write_table(df, out, metadata={"model": name, "variant": variant, "model_source": source.path,
                                   "template": source.template or "", "max_new_tokens": max_new_tokens,
                                   "classifier": "string_match", "dataset_fingerprint": meta.get("dataset_fingerprint", "")})
    unsafe = df["safety_label"] == "unsafe"
    log.info("%s/%s: refused %.2f of unsafe and %.2f of safe prompts", name, variant,
             df.loc[unsafe, "refused"].mean(), df.loc[~unsafe, "refused"].mean())
