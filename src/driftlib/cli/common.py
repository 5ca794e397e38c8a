"""What the phase command modules share: value types, argument groups, and the typed objects that
groups of arguments become (a model source, a steering spec, a read-out, cost options).

Nothing here imports torch: ``driftlib <command> --help`` and the numpy-only commands start fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = ["COMMANDS", "aqi_options", "bound_options", "command", "cost", "cost_options", "layer", "load_arguments",
           "none_or_float", "none_or_int", "read", "read_options", "source", "steering", "steering_options"]


def layer(value: str) -> int | float:
    """A layer on the command line: ``3`` / ``-1`` is a block index, ``0.5`` a relative depth."""
    try:
        return float(value) if any(c in value for c in ".eE") else int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a layer: {value!r} (an int block index or a float depth)")


def none_or_int(value: str) -> int | None:
    return None if value.lower() in ("none", "null", "all") else int(value)


def none_or_float(value: str) -> float | None:
    return None if value.lower() in ("none", "null") else float(value)


#: every command registered so far: name -> the function that runs it
COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {}


def command(sub: Any, name: str, run: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
    """A subcommand ``name`` that runs ``run(args)``: a function that maps the arguments to one phase
    function and calls it (``workflow/rules/common.smk`` follows that call to list the rule's code)."""
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(func=run)
    COMMANDS[name] = run
    return p


# --------------------------------------------------------------------------- argument groups


def load_arguments(p: argparse.ArgumentParser, what: str = "hub id or local directory") -> None:
    """How a model is loaded (``--model``, ``--revision``, ``--dtype``, ``--device``, ``--trust-remote-code``)."""
    p.add_argument("--model", required=True, help=what)
    p.add_argument("--revision", default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--template", default=None,
                   help="model folder or hub id whose chat template renders prompts (the aligned variant's)")


def aqi_options(p: argparse.ArgumentParser) -> None:
    """The AQI settings (config section ``aqi``)."""
    p.add_argument("--method", choices=["standardize", "none"], default="standardize")
    p.add_argument("--pca-components", type=none_or_int, default=32)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--permutations", type=int, default=200)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe-folds", type=int, default=0, help="linear-probe AUC beside the AQI (0: none)")


def steering_options(p: argparse.ArgumentParser, *, inject_default: list | None = None) -> None:
    """The steering specification (config section ``steering``): injection layers, operator, norm preservation."""
    if inject_default is None:
        p.add_argument("--inject", type=layer, nargs="+", required=True, help="injection layers")
    else:
        p.add_argument("--inject", type=layer, nargs="+", default=inject_default, help="injection layers")
    p.add_argument("--operator", default="add", help="steering operator (driftlib.steer.operators)")
    p.add_argument("--preserve-norm", action="store_true", help="rescale each steered token to its norm")
    p.add_argument("--condition", default=None, help="the condition of a gated operator (fit-condition output)")


def read_options(p: argparse.ArgumentParser) -> None:
    """How steered hidden states are read (config ``extraction`` and ``steering.measure_layers``)."""
    p.add_argument("--texts", required=True)
    p.add_argument("--measure", type=layer, nargs="+", required=True)
    pooling_options(p)
    p.add_argument("--max-length", type=int, default=256)


def batch_options(p: argparse.ArgumentParser) -> None:
    """How texts are batched (config ``extraction``): rows per batch, or a token budget, and packing."""
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--tokens-per-batch", type=int, default=None,
                   help="batch by this many (padded) tokens instead of --batch-size rows")
    p.add_argument("--packing", action="store_true", help="several texts per row where the model keeps them apart")
    p.add_argument("--compile", action="store_true", help="run the decoder blocks through torch.compile (GPU)")


def pooling_options(p: argparse.ArgumentParser) -> None:
    """How prompts are read (config ``extraction``): the rendering and the pooling."""
    p.add_argument("--render", choices=["raw", "chat"], default="raw",
                   help="raw text, or one user turn through the chat template (docs/aqi.md)")
    p.add_argument("--pooling", choices=["mean", "last"], default="mean")
    p.add_argument("--no-skip-first", dest="skip_first", action="store_false")


def cost_options(p: argparse.ArgumentParser) -> None:
    """What the capability cost is measured on (config ``steering.cost``)."""
    p.add_argument("--neutral", default="bundled", help="bundled, or a text file with one neutral text per line")
    p.add_argument("--n-texts", type=int, default=40)
    p.add_argument("--n-prompts", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=24)


def bound_options(p: argparse.ArgumentParser) -> None:
    """The capability-cost bound (config ``steering.max_kl``, ``max_repetition_increase``)."""
    p.add_argument("--max-kl", type=float, required=True)
    p.add_argument("--max-repetition-increase", type=float, required=True)


# --------------------------------------------------------------------------- typed values of argument groups


def source(a: argparse.Namespace):
    """The :class:`~driftlib.model.source.ModelSource` of :func:`load_arguments`."""
    from driftlib.model.source import ModelSource

    return ModelSource(a.model, revision=a.revision, dtype=a.dtype, device=a.device,
                       trust_remote_code=a.trust_remote_code, template=a.template)


def steering(a: argparse.Namespace):
    """The :class:`~driftlib.steer.spec.SteeringSpec` of :func:`steering_options` (no vectors yet)."""
    from driftlib.stats.condition import load_condition
    from driftlib.steer.spec import SteeringSpec

    condition = load_condition(a.condition)[0] if a.condition else None
    return SteeringSpec(layers=tuple(a.inject), operator=a.operator, preserve_norm=a.preserve_norm, condition=condition)


def read(a: argparse.Namespace):
    """The :class:`~driftlib.steer.runs.ReadOut` of :func:`read_options`."""
    from driftlib.steer.runs import ReadOut

    return ReadOut(measure=tuple(a.measure), pooling=a.pooling, skip_first=a.skip_first, max_length=a.max_length,
                   render=a.render)


def cost(a: argparse.Namespace):
    """The :class:`~driftlib.steer.runs.CostOptions` of :func:`cost_options`."""
    from driftlib.steer.runs import CostOptions

    return CostOptions(neutral=a.neutral, n_texts=a.n_texts, n_prompts=a.n_prompts, max_new_tokens=a.max_new_tokens)
