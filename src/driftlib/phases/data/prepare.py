"""``driftlib prepare-world``, ``prepare-prompts`` and ``prepare-pairs``: write the synthetic world's
files, and sample the evaluation prompts and the preference pairs into Parquet tables with their
provenance."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from driftlib.core.artifacts import fingerprint, write_table

log = logging.getLogger(__name__)

__all__ = ["prepare_pairs", "prepare_prompts", "prepare_world"]


def prepare_world(*, spec: dict, seed: int, out: str | Path) -> None:
    """Draw the synthetic world ``WorldSpec(seed=seed, **spec)`` and write its files into ``out``.

    Args:
        spec: the :class:`~driftlib.datasets.synthetic.WorldSpec` sizes (config ``world`` without
            ``enabled``).
        seed: the world's seed.
        out: the folder (:func:`~driftlib.datasets.synthetic.write_world` writes its files there).
    """
    from driftlib.core.errors import ConfigError
    from driftlib.datasets.synthetic import WorldSpec, make_world, write_world

    try:
        world_spec = WorldSpec(seed=seed, **spec)
    except TypeError as exc:
        raise ConfigError(f"world: {exc}") from None
    world = make_world(world_spec)
    paths = write_world(world, out)
    log.info("wrote the synthetic world (%s) to %s", ", ".join(f"{k} {v}" for k, v in world.counts.items()),
             Path(next(iter(paths.values()))).parent)


def prepare_prompts(*, source: str, split: str, per_group: int | None, axioms: Sequence[str] | None, seed: int,
                    out: str | Path, calibration_out: str | Path | None = None,
                    calibration_per_group: int | None = None, calibration_source: str | None = None) -> None:
    """Load LITMUS-form prompts from ``source`` and sample ``per_group`` per (axiom, label).

    With ``calibration_out``, also write the calibration prompts (what conditional steering fits
    its condition on): ``calibration_per_group`` per (axiom, label) drawn, with another seed, from
    the rows of ``calibration_source`` (None: the same source) that are not evaluation prompts (no
    shared id, no shared text); ``None`` takes every remaining row.
    """
    from driftlib.datasets.prompts import load_prompts, sample_balanced

    df, load_report = load_prompts(source, split=split)
    sample, sample_report = sample_balanced(df, per_group, seed, axioms=axioms)
    meta = {"source": source, "split": split, "per_group": per_group, "seed": seed, "load": load_report,
            "sampling": sample_report, "dataset_fingerprint": fingerprint(sample)}
    write_table(sample, out, metadata=meta)
    log.info("wrote %d prompts to %s", len(sample), out)
    if calibration_out is None:
        return
    if calibration_source is not None:
        df, _ = load_prompts(calibration_source, split=split)
        source = calibration_source
    rest = df[~df["id"].isin(set(sample["id"])) & ~df["text"].isin(set(sample["text"]))]
    calibration, report = sample_balanced(rest, calibration_per_group, seed + 1, axioms=axioms)
    write_table(calibration, calibration_out, metadata={
        "source": source, "split": split, "per_group": calibration_per_group, "seed": seed + 1, "sampling": report,
        "disjoint_from": fingerprint(sample), "dataset_fingerprint": fingerprint(calibration)})
    log.info("wrote %d calibration prompts (disjoint from the evaluation prompts) to %s", len(calibration),
             calibration_out)


def prepare_pairs(*, source: str, data_dir: str | None, split: str, n: int | None, seed: int,
                  out: str | Path) -> None:
    """Load hh-rlhf-form preference pairs from ``source`` and sample ``n``."""
    from driftlib.datasets.pairs import load_pairs, sample_pairs

    df, report = load_pairs(source, data_dir=data_dir, split=split)
    sample = sample_pairs(df, n, seed)
    meta = {"source": source, "data_dir": data_dir, "split": split, "n": n, "seed": seed, "load": report,
            "dataset_fingerprint": fingerprint(sample)}
    write_table(sample, out, metadata=meta)
    log.info("wrote %d pairs to %s", len(sample), out)
