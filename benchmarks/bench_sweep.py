#!/usr/bin/env python
"""Benchmark: a lambda sweep with a cached prefix against one full steered extraction per lambda.

Both sides read the same texts, measurement block, batch size and ``max_length``:

- independent: for each lambda, :func:`driftlib.model.forward.extract_hidden_states` under
  :func:`driftlib.steer.hooks.steer` (tokenising, sorting, every block up to the measurement block);
- sweep: :func:`driftlib.steer.sweep.sweep_hidden_states` (blocks below the first injection block run
  once per batch, the rest once per lambda, see :mod:`driftlib.steer.sweep`).

Setting: a model of SmolLM2-135M's shape with random weights (30 blocks, hidden 576, no download),
5 lambdas (0, .25, .5, .75, 1), injection in the last quarter of the blocks (22..28, random
directions with a norm of half the mean pooled state at that block), measurement at the last block
(29), mean pooling. Texts: chosen and rejected transcripts of the first hh-rlhf harmless-base test
pairs, tokenised by a byte-level BPE trained here on that file. Prints the time ratio (target
<= 0.55), the largest difference of the pooled states, and (when :mod:`driftlib.stats.aqi` has
``alignment_quality``) the largest difference of the AQIs computed on random safe/unsafe labels.

With ``--transfer ARCH`` it measures phase 4's transfer sweep instead, on a tiny-family model
(``ARCH``: llama, mistral, qwen2, phi3 or gemma2; random weights, the tiny tokenizer, the bundled
evaluation prompts, the default config's injection at 0.5 and measurement at 1.0): 3 methods x
(mapped, shuffled-map control, random control) = 9 specs x 5 lambdas, as the ratio to one unsteered
extraction of the same prompts at the measurement block, side by side for the old path (one
:func:`~driftlib.steer.sweep.sweep_hidden_states` per spec) and the new one
(:func:`driftlib.steer.runs.sweep_specs`: one unsteered prefix per batch for every spec and lambda,
lambda 0 once); target <= 3.

    python benchmarks/bench_sweep.py                          # CPU, float32, 128 texts
    python benchmarks/bench_sweep.py --device cuda --dtype bfloat16 --repeats 3
    python benchmarks/bench_sweep.py --transfer llama --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from common import DATA, SMOL, read_pairs, sync, train_tokenizer  # noqa: E402

from driftlib.model.forward import extract_hidden_states  # noqa: E402
from driftlib.model.loading import resolve_device, resolve_dtype  # noqa: E402
from driftlib.steer.hooks import steer  # noqa: E402
from driftlib.steer.sweep import sweep_hidden_states  # noqa: E402

LAMBDAS = [0.0, 0.25, 0.5, 0.75, 1.0]
def timed(fn: Callable[[], np.ndarray], device: torch.device) -> tuple[float, float, np.ndarray]:
    """Wall seconds, this process's CPU seconds (all threads) and the result of ``fn()``."""
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    sync(device)
    return time.perf_counter() - start, time.process_time() - cpu, result


def transfer(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
    """The transfer sweep of 9 specs x 5 lambdas over one unsteered extraction, old path and new."""
    import tempfile

    from driftlib.core.layerspec import resolve_layers
    from driftlib.model import tiny
    from driftlib.steer.runs import sweep_specs
    from driftlib.steer.spec import SteeringSpec
    from driftlib.steer.sweep import random_like

    with tempfile.TemporaryDirectory() as folder:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny.train_tokenizer(f"{folder}/tokenizer")))
    torch.manual_seed(0)
    model = tiny.new_model(args.transfer, tokenizer).to(device, dtype).eval()
    config = model.config
    texts = tiny.bundled_prompts()[: args.n_texts]
    n_blocks = config.num_hidden_layers
    inject, measure = resolve_layers([0.5], n_blocks), resolve_layers([1.0], n_blocks)
    rng = np.random.default_rng(0)
    spec, named = SteeringSpec(layers=(0.5,)), {}
    for i, method in enumerate(("ridge", "procrustes", "relative")):
        mapped = {inject[0]: rng.standard_normal(config.hidden_size).astype(np.float32)}
        named[f"{method}/mapped"] = spec.with_vectors(mapped)
        named[f"{method}/shuffled"] = spec.with_vectors({inject[0]: rng.standard_normal(config.hidden_size).astype(np.float32)})
        named[f"{method}/random"] = spec.with_vectors(random_like(mapped, i))
    common = dict(pooling="mean", batch_size=args.batch_size, max_length=args.max_length)

    def extraction() -> np.ndarray:
        return extract_hidden_states(model, tokenizer, texts, measure, progress=False, **common)

    def old() -> dict[str, np.ndarray]:
        return {key: sweep_hidden_states(model, tokenizer, texts, s, LAMBDAS, measure, progress=False, **common)
                for key, s in named.items()}

    def new() -> dict[str, np.ndarray]:
        return sweep_specs(model, tokenizer, texts, named, LAMBDAS, measure, **common)

    extraction()  # warm-up
    times: dict[str, list[float]] = {"extraction": [], "old": [], "new": []}
    results: dict[str, object] = {}
    for _ in range(args.repeats):  # interleaved, so a load spike from other processes hits all alike
        for name, fn in (("extraction", extraction), ("old", old), ("new", new)):
            seconds, _, results[name] = timed(fn, device)
            times[name].append(seconds)
    ext, t_old, t_new = (min(times[k]) for k in ("extraction", "old", "new"))
    k, m, n_lam, n_spec = inject[0], measure[-1], len(LAMBDAS), len(named)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {device} {str(dtype).removeprefix('torch.')}, "
          f"{torch.get_num_threads()} CPU threads, load average {os.getloadavg()[0]:.2f} at end")
    print(f"model: tiny {args.transfer} (random weights, {n_blocks} blocks, hidden {config.hidden_size}); "
          f"{len(texts)} bundled prompts, batch {args.batch_size}; injection block {k}, measurement block {m}; "
          f"{n_spec} specs x {n_lam} lambdas")
    print(f"one unsteered extraction:          fastest {ext:8.3f} s  [{', '.join(f'{t:.3f}' for t in times['extraction'])}]")
    print(f"old: one sweep per spec:           fastest {t_old:8.3f} s  [{', '.join(f'{t:.3f}' for t in times['old'])}]")
    print(f"new: shared prefix, lambda 0 once: fastest {t_new:8.3f} s  [{', '.join(f'{t:.3f}' for t in times['new'])}]")
    blocks_old = n_spec * (k + n_lam * (m - k + 1)) / (m + 1)
    blocks_new = (m + 1 + n_spec * (n_lam - 1) * (m - k + 1)) / (m + 1)
    print(f"ratio to the extraction: old {t_old / ext:.2f}, new {t_new / ext:.2f} (target <= 3: "
          f"{'meets' if t_new / ext <= 3 else 'MISSES'}); new / old {t_new / t_old:.3f}")
    print(f"block-pass ratio to the extraction (the floor without stacking specs into the batch): "
          f"old {blocks_old:.1f}, new {blocks_new:.1f}")
    diff = max(float(np.abs(results["old"][key] - results["new"][key]).max()) for key in named)
    print(f"pooled states: max |new - old| = {diff:.3e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16, float16 or auto (default float32)")
    parser.add_argument("--n-texts", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each variant, interleaved (the fastest is compared)")
    parser.add_argument("--tokenizer-vocab", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--transfer", default=None, metavar="ARCH",
                        help="measure phase 4's transfer sweep on this tiny-family architecture instead")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if args.transfer:
        transfer(args, device, dtype)
        return

    pairs = read_pairs(DATA)
    texts = [text for pair in pairs[: (args.n_texts + 1) // 2] for text in (pair["chosen"], pair["rejected"])][: args.n_texts]
    tokenizer = train_tokenizer(pairs, args.tokenizer_vocab)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(SMOL, dtype=dtype).to(device).eval()
    n_blocks = SMOL.num_hidden_layers
    measure = [n_blocks - 1]
    injection = list(range(int(0.75 * n_blocks), n_blocks - 1))  # 22..28: the last quarter, before the measurement block
    common = dict(pooling="mean", batch_size=args.batch_size, max_length=args.max_length, progress=False)

    # vectors: random directions, norm = half the mean norm of the pooled state at that block
    scale = extract_hidden_states(model, tokenizer, texts[: args.batch_size], injection, **common)
    rng = np.random.default_rng(0)
    vectors = {}
    for column, layer in enumerate(injection):
        direction = rng.standard_normal(SMOL.hidden_size)
        norm = 0.5 * float(np.linalg.norm(scale[:, column], axis=1).mean())
        vectors[layer] = (norm * direction / np.linalg.norm(direction)).astype(np.float32)

    def independent() -> np.ndarray:
        runs = []
        for lam in LAMBDAS:
            with steer(model, vectors, lam):
                runs.append(extract_hidden_states(model, tokenizer, texts, measure, **common))
        return np.stack(runs)

    def sweep() -> np.ndarray:
        return sweep_hidden_states(model, tokenizer, texts, vectors, LAMBDAS, measure, **common)

    # warm-up (allocator, kernels) on one batch
    sweep_hidden_states(model, tokenizer, texts[: args.batch_size], vectors, LAMBDAS[:2], measure, **common)

    times: dict[str, list[float]] = {"independent": [], "sweep": []}
    cpu_times: dict[str, list[float]] = {"independent": [], "sweep": []}
    results: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):  # interleaved, so a load spike from other processes hits both alike
        for name, fn in (("independent", independent), ("sweep", sweep)):
            seconds, cpu_seconds, results[name] = timed(fn, device)
            times[name].append(seconds)
            cpu_times[name].append(cpu_seconds)

    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]]
    first, deepest, n_lam = injection[0], measure[-1], len(LAMBDAS)
    block_ratio = (first + n_lam * (deepest - first + 1)) / (n_lam * (deepest + 1))
    # the fastest run of each variant: other processes' load only ever adds time
    ind, swp = min(times["independent"]), min(times["sweep"])
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {device} {str(dtype).removeprefix('torch.')}, "
          f"{torch.get_num_threads()} CPU threads, load average {os.getloadavg()[0]:.2f} at end")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    print(f"model: SmolLM2-135M shape, random weights, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params")
    print(f"{len(texts)} texts, {sum(lengths)} tokens ({min(lengths)}-{max(lengths)} per text), batch {args.batch_size}, "
          f"max_length {args.max_length}; lambdas {LAMBDAS}; injection blocks {injection[0]}..{injection[-1]}, measurement block {deepest}")
    print(f"independent ({n_lam} x extract under steer): fastest {ind:8.3f} s  [{', '.join(f'{t:.3f}' for t in times['independent'])}]")
    print(f"sweep (cached prefix):                 fastest {swp:8.3f} s  [{', '.join(f'{t:.3f}' for t in times['sweep'])}]")
    ratio = swp / ind
    print(f"time ratio sweep / independent: {ratio:.3f} (target <= 0.55: {'meets' if ratio <= 0.55 else 'MISSES'}); "
          f"block-count ratio {block_ratio:.3f}")
    if device.type == "cpu":  # CPU seconds of this process: less sensitive to other processes' load than wall time
        cpu_ratio = min(cpu_times["sweep"]) / min(cpu_times["independent"])
        print(f"process CPU-time ratio (least of the runs): {cpu_ratio:.3f} (independent {min(cpu_times['independent']):.1f} s, "
              f"sweep {min(cpu_times['sweep']):.1f} s)")

    a, b = results["sweep"], results["independent"]
    diff = float(np.abs(a - b).max())
    print(f"pooled states: max |sweep - independent| = {diff:.3e} (max |state| {float(np.abs(b).max()):.3e}); "
          f"max |lambda 1 - lambda 0| = {float(np.abs(b[-1] - b[0]).max()):.3e}")
    try:
        from driftlib.stats.aqi import alignment_quality
    except ImportError:
        print("driftlib.stats.aqi.alignment_quality not found: AQI comparison skipped")
        return
    labels = np.random.default_rng(1).permutation(np.arange(len(texts)) % 2)
    deltas, pairs_aqi = [], []
    for j in range(n_lam):
        q_sweep = alignment_quality(a[j, :, 0], labels, n_boot=0, n_perm=0).aqi
        q_ind = alignment_quality(b[j, :, 0], labels, n_boot=0, n_perm=0).aqi
        deltas.append(abs(q_sweep - q_ind))
        pairs_aqi.append((q_sweep, q_ind))
    print("AQI on random labels per lambda (sweep, independent): " + ", ".join(f"({s:.4f}, {i:.4f})" for s, i in pairs_aqi))
    print(f"AQI: max |sweep - independent| = {max(deltas):.3e}")


if __name__ == "__main__":
    main()
