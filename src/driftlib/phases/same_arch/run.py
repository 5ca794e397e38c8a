"""Phase 3 runs: ``driftlib sweep`` (a model steered with its own vector and a random control over
the lambda grid) and ``driftlib cost`` (what that steering costs the model)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from driftlib.core.artifacts import save_tensors, write_table

if TYPE_CHECKING:  # annotations only; the functions import what they run
    from driftlib.model.source import ModelSource
    from driftlib.steer.runs import CostOptions, ReadOut
    from driftlib.steer.spec import SteeringSpec

log = logging.getLogger(__name__)

__all__ = ["cost", "own_and_random", "sweep"]


def own_and_random(source: ModelSource, vectors: str | Path, kind: str | None, steering: SteeringSpec,
                   seed: int) -> tuple[Any, Any, dict[str, SteeringSpec], str]:
    """The model, its tokenizer and the two specs phase 3 steers with: ``own`` (the model's vector
    at the injection layers) and ``random`` (random directions of the same norms)."""
    from driftlib.model.layers import num_layers
    from driftlib.steer.sweep import random_like
    from driftlib.steer.vectors import load_steering_vectors

    found = load_steering_vectors(vectors, kind)
    model, tokenizer = source.load()
    own = steering.bind(found.vectors, num_layers(model), what=f"{vectors}: {found.kind}")
    return model, tokenizer, {"own": own, "random": own.with_vectors(random_like(own.vectors, seed))}, found.kind


def sweep(*, source: ModelSource, name: str, vectors: str | Path, kind: str | None, steering: SteeringSpec,
          lambdas: Sequence[float], texts: str | Path, read: ReadOut, batch_size: int, seed: int,
          out: str | Path) -> None:
    """Hidden states of the prompts steered over ``lambdas``, with the own vector and the random control."""
    from driftlib.steer.runs import sweep_file
    model, tokenizer, named, kind = own_and_random(source, vectors, kind, steering, seed)
    tensors, _, meta = sweep_file(model, tokenizer, texts, named, lambdas, read, batch_size=batch_size, name=name,
                                  source=source.path, seed=seed)
    save_tensors(out, tensors, metadata={**meta, "kind": kind, "inject_layers": named["own"].blocks})
    log.info("wrote sweep %s to %s", tuple(tensors["own"].shape), out)


def cost(*, source: ModelSource, name: str, vectors: str | Path, kind: str | None, steering: SteeringSpec,
         lambdas: Sequence[float], cost: CostOptions, batch_size: int, seed: int, out: str | Path) -> None:
    """Capability cost (next-token KL, repetition) of the own vector and the random control per lambda."""
    from driftlib.steer.runs import cost_rows
    model, tokenizer, named, kind = own_and_random(source, vectors, kind, steering, seed)
    rows = cost_rows(model, tokenizer, named, lambdas, cost, batch_size=batch_size)
    write_table(pd.DataFrame(rows), out, metadata={"model": name, "kind": kind, **cost.metadata(), "seed": seed,
                                                   **steering.metadata()})
