"""``driftlib extract``: pooled decoder-block outputs of one model on a table of texts, as one
safetensors file with its metadata."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from driftlib.core.artifacts import read_table, save_tensors
from driftlib.core.layerspec import resolve_layers

if TYPE_CHECKING:  # annotations only; the functions import what they run
    from driftlib.model.source import ModelSource

log = logging.getLogger(__name__)

__all__ = ["extract"]


def extract(*, source: ModelSource, name: str, variant: str, texts: str | Path, text_column: Sequence[str],
            layers: Sequence[int | float] | None, all_layers: bool, pooling: str, skip_first: bool,
            batch_size: int, max_length: int, out: str | Path, render: str = "raw",
            tokens_per_batch: int | None = None, packing: bool = False, compile: bool = False) -> None:
    """Extract ``texts``' hidden states (one tensor per text column; one column is stored as ``hidden``).

    Args:
        source: the model.
        name, variant: the model key and variant (recorded).
        texts: a Parquet table with ``id`` and the text columns.
        text_column: the columns to read; several give one tensor each, named by column.
        layers: block indices or relative depths (None with ``all_layers``).
        all_layers: read every decoder block.
        pooling, skip_first, batch_size, max_length, tokens_per_batch, packing, compile: as in
            :func:`driftlib.model.forward.extract_hidden_states` (a token budget per batch instead of a
            row count; several texts per row where the model keeps them apart; compiled decoder blocks).
        out: the safetensors file to write.
        render: ``raw`` (texts as written) or ``chat`` (each text one user turn through the chat
            template of ``source.template``, else the model's own; :func:`driftlib.model.render.format_prompts`).
    """
    from driftlib.model.forward import extract_hidden_states
    from driftlib.model.layers import num_layers
    from driftlib.model.loading import describe_model
    from driftlib.model.render import format_prompts

    texts_df, texts_meta = read_table(texts, columns=["id", *text_column])
    model, tokenizer = source.load()
    template = source.load_template() if render == "chat" else None
    depth = num_layers(model)
    blocks = list(range(depth)) if all_layers else resolve_layers(layers, depth, key="aqi.layers")
    tensors = {}
    for column in text_column:
        tensors[column if len(text_column) > 1 else "hidden"] = extract_hidden_states(
            model, tokenizer, format_prompts(tokenizer, texts_df[column].tolist(), render, template_tokenizer=template),
            blocks, pooling=pooling, skip_first=skip_first,
            batch_size=batch_size, max_length=max_length, model_name=f"{name}/{variant}",
            tokens_per_batch=tokens_per_batch, packing=packing, compile=compile)
    hidden = next(iter(tensors.values()))
    info = describe_model(model)
    meta = {
        "model": name, "variant": variant, "model_source": source.path,
        "revision": source.revision or "", "model_type": info.get("model_type", ""),
        "n_layers": depth, "hidden_size": int(hidden.shape[-1]), "layers": blocks,
        "layer_spec": "all" if all_layers else layers, "pooling": pooling, "skip_first": skip_first, "render": render,
        "template": source.template or "",
        "max_length": max_length, "truncation_side": "left",
        "dataset_fingerprint": texts_meta.get("dataset_fingerprint", ""),
        "n_rows": int(hidden.shape[0]), "ids": texts_df["id"].astype(str).tolist(),
        "dtype": str(info.get("dtype", "")), "text_columns": list(text_column),
    }
    save_tensors(out, tensors, metadata=meta)
    log.info("wrote hidden states %s to %s", tuple(hidden.shape), out)
