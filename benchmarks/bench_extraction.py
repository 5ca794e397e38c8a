#!/usr/bin/env python
"""Benchmark: driftlib hidden-state extraction against a bare ``model(**batch)`` loop.

Both sides see the same texts, batch size and ``max_length`` and run under ``torch.inference_mode()``:

- baseline: the texts in the order given, batches tokenised beforehand (not timed), each padded to its
  longest text, the full model run (every block, final norm, LM head over every position);
- baseline+tok: the same loop, tokenising each batch inside it (what a plain script does); shown for
  reference, the targets are checked against the forward-only baseline, the stricter one;
- driftlib: :func:`driftlib.model.forward.extract_hidden_states` end to end (tokenising, sorting by
  length, early stop after the requested block, mean pooling, copy to the CPU), timed in full.

Models have random weights (no download): (a) a small Llama-style model (hidden 64, 4 blocks, vocab
2048) and (b) a model of SmolLM2-135M's shape (30 blocks, hidden 576, vocab 49152, tied embeddings).
Texts are real hh-rlhf transcripts (chosen and rejected of the first pairs), tokenised by byte-level
BPEs trained here on that file. Targets: ratio <= 1.0 on (a) and <= 0.6 on (b) reading the last block.

    python benchmarks/bench_extraction.py                       # CPU, float32, 200 texts
    python benchmarks/bench_extraction.py --device cuda --dtype bfloat16
    python benchmarks/bench_extraction.py --n-texts 64 --models smol --repeats 1
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from common import DATA, read_pairs, sync, train_tokenizer  # noqa: E402

from driftlib.model.forward import extract_hidden_states  # noqa: E402
from driftlib.model.loading import resolve_device, resolve_dtype  # noqa: E402

MODELS: dict[str, tuple[str, transformers.LlamaConfig]] = {
    "small": (
        "small Llama-style (hidden 64, 4 blocks, vocab 2048)",
        transformers.LlamaConfig(
            vocab_size=2048, hidden_size=64, intermediate_size=256, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        ),
    ),
    "smol": (
        "SmolLM2-135M shape (30 blocks, hidden 576, vocab 49152)",
        transformers.LlamaConfig(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
            tie_word_embeddings=True, rope_theta=100000.0, rms_norm_eps=1e-5,
        ),
    ),
}


def load_texts(path: Path, n: int) -> list[str]:
    """``n`` texts: chosen and rejected of the first ``n / 2`` pairs, interleaved (varied lengths)."""
    return [text for pair in read_pairs(path)[: (n + 1) // 2] for text in (pair["chosen"], pair["rejected"])][:n]


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def bench_model(key: str, args: argparse.Namespace, texts: list[str], device: torch.device, dtype: torch.dtype) -> list[dict[str, object]]:
    label, config = MODELS[key]
    tokenizer = train_tokenizer(read_pairs(args.data), min(config.vocab_size, args.tokenizer_vocab))
    tokenizer.padding_side = "left"
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()
    n_blocks = config.num_hidden_layers

    batches = []
    tokenizer.truncation_side = "left"
    for start in range(0, len(texts), args.batch_size):
        enc = tokenizer(texts[start : start + args.batch_size], padding=True, truncation=True, max_length=args.max_length, return_tensors="pt")
        batches.append({k: v.to(device) for k, v in enc.items()})
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]]
    padded = sum(b["input_ids"].numel() for b in batches)

    def baseline() -> None:
        with torch.inference_mode():
            for batch in batches:
                model(**batch)

    def baseline_tok() -> None:
        with torch.inference_mode():
            for start in range(0, len(texts), args.batch_size):
                enc = tokenizer(texts[start : start + args.batch_size], padding=True, truncation=True, max_length=args.max_length, return_tensors="pt")
                model(**{k: v.to(device) for k, v in enc.items()})

    def extraction(layer: int) -> Callable[[], object]:
        return lambda: extract_hidden_states(
            model, tokenizer, texts, [layer], pooling="mean", batch_size=args.batch_size,
            max_length=args.max_length, progress=False,
        )

    runs = {
        "baseline": baseline,
        "baseline+tok": baseline_tok,
        "last block": extraction(n_blocks - 1),
        "middle block": extraction(n_blocks // 2 - 1),
    }
    # warm up (allocator, kernels, lazy init): on a GPU one full pass of each, as every batch shape
    # costs a first-call penalty there; on a CPU one batch of each
    if device.type == "cuda":
        for fn in runs.values():
            fn()
    else:
        with torch.inference_mode():
            model(**batches[0])
        extract_hidden_states(model, tokenizer, texts[: args.batch_size], [n_blocks - 1], batch_size=args.batch_size, progress=False)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):  # interleave, so a load spike from other processes hits every variant alike
        for name, fn in runs.items():
            times[name] += timed(fn, device, 1)
    base = statistics.median(times["baseline"])
    print(f"\n== ({key}) {label}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, {device} {str(dtype).removeprefix('torch.')}")
    print(f"   {len(texts)} texts, {sum(lengths)} real tokens ({min(lengths)}-{max(lengths)} per text), "
          f"{padded} positions in the baseline's padded batches, batch {args.batch_size}, max_length {args.max_length}")
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        ratio = median / base
        ratio_tok = median / statistics.median(times["baseline+tok"])
        extra = "" if name.startswith("baseline") else f"   ratio {ratio:.3f} (vs baseline+tok {ratio_tok:.3f})"
        block = {"last block": str(n_blocks - 1), "middle block": str(n_blocks // 2 - 1)}.get(name, "all + LM head")
        print(f"   {name:<13} (block {block:>13}): median {median:8.3f} s  [{', '.join(f'{v:.3f}' for v in values)}]{extra}")
        rows.append({"model": key, "run": name, "median_s": median, "ratio": ratio, "ratio_tok": ratio_tok})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16, float16 or auto (default float32)")
    parser.add_argument("--n-texts", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each variant (median reported)")
    parser.add_argument("--models", default="small,smol", help="comma-separated: small, smol")
    parser.add_argument("--tokenizer-vocab", type=int, default=16384, help="BPE vocabulary size (capped at the model's)")
    parser.add_argument("--data", type=Path, default=DATA, help=f"hh-rlhf jsonl.gz (default {DATA})")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if not args.data.is_file():
        parser.error(f"--data: {args.data} not found")
    texts = load_texts(args.data, args.n_texts)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} CPU threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    results = []
    for key in args.models.split(","):
        results += bench_model(key.strip(), args, texts, device, dtype)
    print(f"\nload average {os.getloadavg()[0]:.2f} at end (other processes may share the CPU)")
    targets = {"small": 1.0, "smol": 0.6}
    for row in results:
        if row["run"] == "last block":
            verdict = "meets" if row["ratio"] <= targets[row["model"]] else "MISSES"
            print(f"target: ({row['model']}) last-block ratio {row['ratio']:.3f} {verdict} <= {targets[row['model']]} "
                  f"(vs baseline+tok: {row['ratio_tok']:.3f})")


if __name__ == "__main__":
    main()
