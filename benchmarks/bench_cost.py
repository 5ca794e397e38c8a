#!/usr/bin/env python
"""Benchmark: the capability cost's greedy generations, one ``generate()`` per (spec, lambda) run
against the runs stacked in the batch dimension (:func:`driftlib.steer.capability.greedy_runs`).

Setting: a tiny-family model (``--arch``, random weights, the tiny tokenizer), the cost's bundled
generation prompts (``steering.cost``: 8 prompts, 24 new tokens, batch 64), and as many specs as the
cost of a transfer sweep into one target measures in the default config (4 sources x 3 methods x
(mapped, shuffled, random) = 36; ``--specs``; operators ``add``, ``ablate`` and ``ablate_add`` in
turn), each at the 4 non-zero lambdas of the default grid, plus the unsteered run. Prints the fastest of ``--repeats`` interleaved runs of each side, the
ratio, and whether every continuation is the same token for token.

    python benchmarks/bench_cost.py --threads 1
    python benchmarks/bench_cost.py --device cuda --dtype bfloat16 --specs 36
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from common import sync  # noqa: E402

from driftlib.model import tiny  # noqa: E402
from driftlib.model.loading import resolve_device, resolve_dtype  # noqa: E402
from driftlib.steer.capability import greedy_continuations, greedy_runs  # noqa: E402
from driftlib.steer.runs import CostOptions  # noqa: E402
from driftlib.steer.spec import SteeringSpec  # noqa: E402

LAMBDAS = [0.25, 0.5, 0.75, 1.0]
OPERATORS = ("add", "ablate", "ablate_add")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="llama", choices=["llama", "mistral", "qwen2", "phi3", "gemma2"])
    parser.add_argument("--specs", type=int, default=36)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny.train_tokenizer(f"{folder}/tokenizer")))
    torch.manual_seed(0)
    model = tiny.new_model(args.arch, tokenizer).to(device, dtype).eval()
    config = model.config
    prompts = CostOptions().texts()[1]
    rng = np.random.default_rng(0)
    block = config.num_hidden_layers // 2
    runs: list[SteeringSpec | None] = [None]
    for i in range(args.specs):
        v = rng.standard_normal(config.hidden_size).astype(np.float32)
        spec = SteeringSpec(layers=(block,), operator=OPERATORS[i % len(OPERATORS)]).with_vectors({block: 4 * v})
        runs.extend(spec.with_lam(lam) for lam in LAMBDAS)
    options = {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size}

    def one_per_run() -> list[list[list[int]]]:
        return [greedy_continuations(model, tokenizer, prompts, spec, spec.lam if spec else 0.0, **options)
                for spec in runs]

    def stacked() -> list[list[list[int]]]:
        return greedy_runs(model, tokenizer, prompts, runs, **options)

    times: dict[str, list[float]] = {"one per run": [], "stacked": []}
    results = {}
    for _ in range(args.repeats):  # interleaved: a load spike hits both alike
        for name, fn in (("one per run", one_per_run), ("stacked", stacked)):
            sync(device)
            start = time.perf_counter()
            results[name] = fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    old, new = min(times["one per run"]), min(times["stacked"])
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {device} "
          f"{str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} CPU threads, "
          f"load average {os.getloadavg()[0]:.2f} at end")
    print(f"model: tiny {args.arch} (random weights, hidden {config.hidden_size}); {len(prompts)} prompts x "
          f"{len(runs)} runs ({args.specs} specs x {len(LAMBDAS)} lambdas + unsteered), {args.max_new_tokens} new "
          f"tokens, batch {args.batch_size}")
    for name, values in times.items():
        print(f"{name:12s} fastest {min(values):8.3f} s  [{', '.join(f'{t:.3f}' for t in values)}]")
    same = results["one per run"] == results["stacked"]
    print(f"stacked / one per run: {new / old:.3f}; continuations identical: {same}")


if __name__ == "__main__":
    main()
