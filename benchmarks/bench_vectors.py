#!/usr/bin/env python
"""Benchmark: contrastive steering-vector extraction, driftlib against the ``steering-vectors`` library.

The vector is the same on both sides: per layer ``l``, ``mean_i h_l(chosen_i) - mean_i h_l(rejected_i)``
read at the last token of each text (decoder-block outputs):

- steering-vectors (``steering_vectors.train_steering_vector``, default ``mean_aggregator``,
  ``read_token_index=-1``, ``layer_type="decoder_block"``): per batch of pairs, one forward pass on
  the chosen texts and one on the rejected texts, each through the *whole* model (every block, final
  norm, LM head), batches in the order given, padded to their longest text;
- driftlib: :func:`driftlib.model.forward.extract_hidden_states` with ``pooling="last"`` on the chosen
  texts and on the rejected texts (tokenised once, sorted by length, left-padded, the forward pass
  stopped after the deepest requested block), then ``mean(chosen) - mean(rejected)``.

Like for like:

- **Same tokens.** steering-vectors calls ``tokenizer(prompts, padding=True)`` without truncation,
  so it cannot be given a ``max_length``. Every text is therefore cut beforehand to its last
  ``max_length`` tokens (BOS included; left truncation, as driftlib does for preference transcripts),
  decoded back to a string, and shortened further by whole characters until it re-encodes to at
  most ``max_length`` tokens. Both libraries get these strings, so driftlib's own truncation is a
  no-op and both see the same token ids.
- **Same padding semantics.** steering-vectors runs with the tokenizer's padding side, here
  ``right``: it finds the last real token from the attention mask (``adjust_read_indices_for_padding``)
  and passes no position ids, which is exact for right padding (real tokens keep positions
  ``0..L-1`` and never see the pads). With left padding and no position ids, the positions of a
  short text would be shifted by its padding; RoPE only sees relative positions so the result
  would differ by rounding only, but an absolute-position model (GPT-2) would differ for real.
  driftlib passes mask-based position ids, so its left padding is exact.
- **Same batch size** (16) for the headline ratio; the library's default, ``batch_size=1`` (no
  padding at all), is timed too.

``steering-vectors`` (0.12.2) declares ``transformers<5``; it only imports a tokenizer base class
from transformers, so it is installed without its dependencies to keep the project's transformers::

    pip install --no-deps -c constraints-cpu.txt steering-vectors==0.12.2

Setting: a model of SmolLM2-135M's shape with random weights, the first 200 hh-rlhf harmless-base
test pairs, blocks 10..19, ``max_length`` 128. Prints both times, the ratio (target <= 0.5) and
the per-layer cosine between the two vectors (must be > 0.999).

    python benchmarks/bench_vectors.py                     # CPU, float32; theirs at batch 16 and 1
    python benchmarks/bench_vectors.py --repeats 3 --their-batch-sizes 16
    python benchmarks/bench_vectors.py --device cuda --dtype bfloat16

On a shared CPU, wall times swing with other processes' load (seen: the same run 2-4x slower);
runs are interleaved and the fastest run of each is compared (load only adds time); on the CPU the
process's CPU time (least of the runs) is printed too.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from common import DATA, SMOL, read_pairs, sync, train_tokenizer  # noqa: E402

from driftlib.model.forward import extract_hidden_states  # noqa: E402
from driftlib.model.loading import resolve_device, resolve_dtype  # noqa: E402


def fit_to_length(tokenizer: transformers.PreTrainedTokenizerFast, text: str, max_length: int) -> str:
    """The end of ``text`` that encodes (BOS included) to at most ``max_length`` tokens."""
    ids = tokenizer(text)["input_ids"]
    if len(ids) <= max_length:
        return text
    text = tokenizer.decode(ids[len(ids) - (max_length - 1):], skip_special_tokens=True)
    while len(tokenizer(text)["input_ids"]) > max_length:
        text = text[1:]
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16, float16 or auto (default float32)")
    parser.add_argument("--n-pairs", type=int, default=200)
    parser.add_argument("--layers", default="10-19", help="first-last block, inclusive (default 10-19)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--their-batch-sizes", default="16,1", help="steering-vectors batch sizes to time (default 16,1)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--tokenizer-vocab", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved timed runs of each variant (the fastest is compared)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    import steering_vectors  # benchmark-only dependency (see the module docstring)

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    low, high = (int(x) for x in args.layers.split("-"))
    layers = list(range(low, high + 1))

    all_pairs = read_pairs(DATA)
    tokenizer = train_tokenizer(all_pairs, args.tokenizer_vocab)
    tokenizer.padding_side = "right"
    pairs = [
        (fit_to_length(tokenizer, p["chosen"], args.max_length), fit_to_length(tokenizer, p["rejected"], args.max_length))
        for p in all_pairs[: args.n_pairs]
    ]
    chosen, rejected = [c for c, _ in pairs], [r for _, r in pairs]
    lengths = [len(ids) for ids in tokenizer(chosen + rejected)["input_ids"]]
    assert max(lengths) <= args.max_length
    identical = sum(c == r for c, r in pairs)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(SMOL, dtype=dtype).to(device).eval()

    def ours() -> np.ndarray:
        common = dict(pooling="last", batch_size=args.batch_size, max_length=args.max_length, progress=False)
        pos = extract_hidden_states(model, tokenizer, chosen, layers, **common)
        neg = extract_hidden_states(model, tokenizer, rejected, layers, **common)
        return pos.astype(np.float64).mean(axis=0) - neg.astype(np.float64).mean(axis=0)  # [L, d]

    def theirs(batch_size: int) -> np.ndarray:
        vector = steering_vectors.train_steering_vector(
            model, tokenizer, pairs, layers=layers, layer_type="decoder_block",
            read_token_index=-1, batch_size=batch_size, show_progress=False,
        )
        return np.stack([vector.layer_activations[layer].double().cpu().numpy() for layer in layers])

    # warm-up on a few pairs
    extract_hidden_states(model, tokenizer, chosen[: args.batch_size], layers, pooling="last", batch_size=args.batch_size, progress=False)
    steering_vectors.train_steering_vector(model, tokenizer, pairs[:4], layers=layers, batch_size=4)

    cpu_used: dict[str, list[float]] = {}

    def timed(fn, *fn_args) -> tuple[float, np.ndarray]:  # type: ignore[no-untyped-def]
        """Wall seconds and result; this process's CPU seconds go to ``cpu_used[name]``."""
        sync(device)
        start, cpu = time.perf_counter(), time.process_time()
        result = fn(*fn_args)
        sync(device)
        name = "ours" if fn is ours else f"theirs {fn_args[0]}"
        cpu_used.setdefault(name, []).append(time.process_time() - cpu)
        return time.perf_counter() - start, result

    # interleaved (ours, theirs at each batch size, ours, ...), so a load spike from other
    # processes hits every variant alike; medians are reported
    sizes = [int(b) for b in args.their_batch_sizes.split(",")]
    ours_times: list[float] = []
    their_times: dict[int, list[float]] = {b: [] for b in sizes}
    their_vectors: dict[int, np.ndarray] = {}
    for _ in range(args.repeats):
        seconds, v_ours = timed(ours)
        ours_times.append(seconds)
        for b in sizes:
            seconds, their_vectors[b] = timed(theirs, b)
            their_times[b].append(seconds)
    # the fastest run of each variant: other processes' load only ever adds time
    t_ours = min(ours_times)
    theirs_runs = {b: (min(their_times[b]), their_vectors[b]) for b in sizes}

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, steering-vectors {steering_vectors.__version__}, "
          f"{device} {str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} CPU threads, load average {os.getloadavg()[0]:.2f} at end")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    print(f"model: SmolLM2-135M shape, random weights; {len(pairs)} hh-rlhf pairs ({identical} identical after cutting to "
          f"{args.max_length} tokens), {sum(lengths)} tokens ({min(lengths)}-{max(lengths)} per text); blocks {low}..{high}, last token")
    print(f"driftlib (batch {args.batch_size}, sorted, stops after block {high}): {t_ours:8.3f} s  [{', '.join(f'{t:.3f}' for t in ours_times)}]")
    for batch_size, (seconds, vec) in theirs_runs.items():
        a, b = v_ours, vec
        cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)
        ratio = t_ours / seconds
        print(f"steering-vectors (batch {batch_size:>2}, full model): {seconds:8.3f} s  [{', '.join(f'{t:.3f}' for t in their_times[batch_size])}]   ratio driftlib/theirs {ratio:.3f} "
              f"(target <= 0.5: {'meets' if ratio <= 0.5 else 'MISSES'})")
        print(f"   cosine per block {low}..{high}: " + " ".join(f"{c:.6f}" for c in cos)
              + f"   (min {cos.min():.6f}: {'> 0.999' if cos.min() > 0.999 else 'NOT > 0.999'}); max relative difference {rel.max():.2e}")
        if device.type == "cpu":  # less sensitive to other processes' load than wall time
            mine, other = min(cpu_used["ours"]), min(cpu_used[f"theirs {batch_size}"])
            print(f"   process CPU time: driftlib {mine:.1f} s, steering-vectors {other:.1f} s, ratio {mine / other:.3f}")


if __name__ == "__main__":
    main()
