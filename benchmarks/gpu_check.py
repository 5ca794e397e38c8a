"""GPU check: extraction and a lambda sweep on a random-weight model of a real shape, old and new batching side by side.

For one shape, prints (and appends to ``--table``) one line per batching setting:

* ``old``: today's fixed count of texts per batch (``batch_size``), longest first, left padding;
* ``budget``: a token budget per batch (``tokens_per_batch``: rows x padded length), left padding;
* ``packed``: the token budget with several texts packed into each row (``packing=True``);
* ``compiled``: ``packed`` with the decoder blocks run through ``torch.compile`` (``compile=True``;
  warmed up on all texts first, so the compile time is printed apart and not in the timed run).

Columns: seconds, real tokens per second, the model FLOPs utilisation (MFU: 2 x non-embedding
parameters x real tokens per second / the card's dense bf16 peak), the time against a bare
``model(**batch)`` loop over the same texts (fixed batches of ``--bare-batch`` in text order,
padded, the whole model), the peak memory, and the largest difference to the first setting's
states (relative to the largest state). Then the 5-lambda sweep per setting, its MFU, and (for the
last setting) the ratio to 5 independent steered extractions; then the capability cost's greedy
generations, one ``generate()`` per (spec, lambda) run against the runs stacked in the batch.

Shapes: Llama-3.2-1B, Llama-3.2-3B, Llama-3.1-8B, and ``tiny`` (for a dry run on a CPU:
``--shape tiny --device cpu``). Nothing is downloaded: the tokenizer is trained on the spot and the
weights are random. Run from the repository root:  PYTHONPATH=src python3 benchmarks/gpu_check.py
(``benchmarks/gpu_run.sh`` runs the three real shapes; ``benchmarks/gpu_run2.sh`` packed against compiled).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}
#: real model shapes (Llama-3.2-1B, Llama-3.2-3B, Llama-3.1-8B), random weights; "tiny" for a CPU dry run
SHAPES = {
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8),
    "llama-3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                     num_key_value_heads=8),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2),
}
VOCAB = {"tiny": 4096}


def make_tokenizer(vocab: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(20000)]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(words)], trainers.WordLevelTrainer(vocab_size=min(vocab, 20000), special_tokens=["<unk>", "<pad>", "<s>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="<s>")
    return fast, words


class Table:
    """Prints lines at once (flushed) and appends them to a file, so nothing is lost if a later step fails."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")


def settings(args: argparse.Namespace) -> list[tuple[str, str, dict]]:
    """(path, label, keyword arguments of extract_hidden_states) for every setting asked for."""
    out = []
    for path in args.paths:
        if path == "old":
            out += [("old", f"batch {bs}", dict(batch_size=bs)) for bs in args.batch_sizes]
        elif path == "budget":
            out += [("budget", f"{tpb} tok", dict(tokens_per_batch=tpb)) for tpb in args.tokens_per_batch]
        elif path == "packed":
            out += [("packed", f"{tpb} tok", dict(tokens_per_batch=tpb, packing=True)) for tpb in args.tokens_per_batch]
        elif path == "compiled":
            out += [("compiled", f"{tpb} tok", dict(tokens_per_batch=tpb, packing=True, compile=True))
                    for tpb in args.tokens_per_batch]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="llama-3b", choices=sorted(SHAPES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    ap.add_argument("--n-texts", type=int, default=512)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--paths", nargs="+", default=["old", "budget", "packed"], choices=["old", "budget", "packed", "compiled"],
                    help="batching paths to compare: old (fixed count), budget (token budget), packed (budget + packing), "
                         "compiled (packed + torch.compile of the blocks)")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode for 'compiled' (default: inductor's default)")
    ap.add_argument("--compile-dynamic", default="auto", choices=["auto", "true", "false"],
                    help="torch.compile dynamic= for 'compiled': auto (None), true, false")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128], help="old path: texts per batch")
    ap.add_argument("--tokens-per-batch", type=int, nargs="+", default=[32768, 65536], help="new paths: token budgets")
    ap.add_argument("--bare-batch", type=int, default=64, help="batch of the bare model(**batch) loop; 0: skip it")
    ap.add_argument("--sweep-texts", type=int, default=256)
    ap.add_argument("--sweep-settings", default="first-old,last",
                    help="which settings also run the sweep: 'all', or 'first-old,last' (the first old one and the last one)")
    ap.add_argument("--no-independent", action="store_true", help="skip the 5 independent steered extractions")
    ap.add_argument("--table", default=None, help="append the table's lines to this file")
    ap.add_argument("--cost-specs", type=int, default=12,
                    help="specs of the stacked-generation check (x 4 lambdas + unsteered); 0: skip it")
    ap.add_argument("--cost-batch", type=int, default=64, help="rows per generate() call of that check")
    args = ap.parse_args()
    table = Table(args.table)

    from transformers import AutoModelForCausalLM, LlamaConfig

    import driftlib.model.forward as forward
    from driftlib.model.forward import extract_hidden_states, packing_works

    forward.COMPILE_OPTIONS = {"mode": args.compile_mode, "dynamic": {"auto": None, "true": True, "false": False}[args.compile_dynamic]}

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda:
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in PEAK_BF16.items() if k in name), 989e12)
        dtype = torch.bfloat16
    else:  # a dry run of the code path: MFU against a nominal 1 TFLOP/s
        name, peak, dtype = "cpu (MFU against a nominal 1 TFLOP/s)", 1e12, torch.float32

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    cfg = LlamaConfig(**SHAPES[args.shape], vocab_size=VOCAB.get(args.shape, 128256), max_position_embeddings=8192)
    t0 = time.perf_counter()
    with torch.device(dev):
        try:
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
        except TypeError:  # transformers < 4.56 calls it torch_dtype
            model = AutoModelForCausalLM.from_config(cfg, torch_dtype=dtype)
    model.eval()
    sync()
    n_params = sum(p.numel() for p in model.parameters())
    n_body = n_params - model.get_input_embeddings().weight.numel() - (0 if cfg.tie_word_embeddings else model.lm_head.weight.numel())
    import transformers
    attn = getattr(model.config, "_attn_implementation", "?")
    print(f"device {name}; torch {torch.__version__}, transformers {transformers.__version__}, attention {attn}; "
          f"{args.shape}: {n_params/1e9:.2f}B params ({n_body/1e9:.2f}B non-embedding), built in {time.perf_counter()-t0:.1f}s",
          flush=True)
    tok, words = make_tokenizer(cfg.vocab_size)
    rng = random.Random(1)
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(32, args.max_length - 8))) for _ in range(args.n_texts)]
    n_tokens = sum(min(len(tok(t)["input_ids"]), args.max_length) for t in texts)
    last = cfg.num_hidden_layers - 1
    packs = packing_works(model, last)
    print(f"{args.n_texts} texts, {n_tokens} real tokens, max_length {args.max_length}, reading block {last} (mean pool); "
          f"packing works on this model: {packs}", flush=True)

    def timed(fn: Callable[[], object]) -> tuple[float, object, float]:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sync()
        t = time.perf_counter()
        result = fn()
        sync()
        mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        return time.perf_counter() - t, result, mem

    def bare() -> None:
        with torch.inference_mode():
            for i in range(0, len(texts), args.bare_batch):
                batch = tok(texts[i:i + args.bare_batch], return_tensors="pt", padding=True, truncation=True,
                            max_length=args.max_length).to(dev)
                model(**batch)

    runs = settings(args)
    # warm-up: every setting once on a slice of texts of every length (kernels, allocator, pinned memory); a
    # compiled one on all texts, so that every shape of the timed run is compiled before it
    warm = texts[: min(len(texts), 96)]
    compile_s = 0.0
    for _, _, kw in runs:
        t = time.perf_counter()
        extract_hidden_states(model, tok, texts if kw.get("compile") else warm, [last], max_length=args.max_length,
                              progress=False, **kw)
        if kw.get("compile"):
            sync()
            compile_s += time.perf_counter() - t
    if args.bare_batch > 0:
        bare_s, _, _ = timed(bare)
        bare_note = f"bare loop (batch {args.bare_batch}, text order, whole model) {bare_s:.2f}s = {n_tokens/bare_s:.0f} tokens/s"
    else:
        bare_s, bare_note = float("nan"), "no bare loop"
    table(f"\n## {args.shape} on {name}: {args.n_texts} texts, {n_tokens} real tokens, max_length {args.max_length}; {bare_note}")
    if any(kw.get("compile") for _, _, kw in runs):
        from torch._dynamo.utils import counters
        table(f"compiled ({forward.COMPILE_OPTIONS}): first run on all texts (compile + run) {compile_s:.1f}s; "
              f"{counters['stats'].get('unique_graphs', 0)} graph(s), {sum(counters['graph_break'].values())} graph break(s)")
    table("| shape | path | setting | extract s | tokens/s | MFU | / bare | peak GiB | max diff / max |h| |")
    table("|---|---|---|---|---|---|---|---|---|")
    reference = None
    results: list[tuple[str, str, dict, float]] = []
    for path, label, kw in runs:
        te, hidden, mem = timed(lambda kw=kw: extract_hidden_states(model, tok, texts, [last], max_length=args.max_length,
                                                                   progress=False, **kw))
        assert hidden.shape == (len(texts), 1, cfg.hidden_size) and np.isfinite(hidden).all()
        if reference is None:
            reference = hidden
        diff = float(np.abs(hidden - reference).max() / np.abs(reference).max())
        mfu = 2 * n_body * n_tokens / te / peak
        results.append((path, label, kw, mfu))
        table(f"| {args.shape} | {path} | {label} | {te:.2f} | {n_tokens/te:.0f} | {mfu:.1%} | {te/bare_s:.2f} | {mem:.1f} | {diff:.2g} |")

    try:
        from driftlib.steer.hooks import steer
        from driftlib.steer.sweep import sweep_hidden_states
    except ImportError as exc:
        table(f"sweep check skipped ({exc})")
        return
    inj = min(int(cfg.num_hidden_layers * 0.75), cfg.num_hidden_layers - 2)
    g = torch.Generator().manual_seed(0)
    vec = {inj: (torch.randn(cfg.hidden_size, generator=g) * 2.0).numpy()}
    lams = [0.0, 0.25, 0.5, 0.75, 1.0]
    sub = texts[: args.sweep_texts]
    sub_tokens = sum(min(len(tok(t)["input_ids"]), args.max_length) for t in sub)
    # block passes the sweep needs: the prefix once, blocks inj..last once per lambda
    blocks = inj + len(lams) * (last - inj + 1)
    if args.sweep_settings == "all":
        chosen = results
    else:
        first_old = next((r for r in results if r[0] == "old"), results[0])
        chosen = [first_old] + ([results[-1]] if results[-1] is not first_old else [])
    table(f"\n{args.shape}: sweep of {len(lams)} lambdas on {len(sub)} texts ({sub_tokens} real tokens), injection at block {inj}, reading block {last}")
    table("| shape | path | setting | sweep s | MFU | / 5 independent | max diff / max |h| |")
    table("|---|---|---|---|---|---|---|")
    swept_ref = None
    for i, (path, label, kw, _) in enumerate(chosen):
        if kw.get("compile"):  # any new shape of the sweep's batches compiles here, not in the timed run
            sweep_hidden_states(model, tok, sub, vec, lams, [last], max_length=args.max_length, progress=False, **kw)
        ts, swept, _ = timed(lambda kw=kw: sweep_hidden_states(model, tok, sub, vec, lams, [last], max_length=args.max_length,
                                                               progress=False, **kw))
        if swept_ref is None:
            swept_ref = swept
        diff = float(np.abs(swept - swept_ref).max() / np.abs(swept_ref).max())
        sweep_mfu = 2 * n_body * sub_tokens * blocks / cfg.num_hidden_layers / ts / peak
        ratio = ""
        if i == len(chosen) - 1 and not args.no_independent:
            def independent(kw=kw) -> list[np.ndarray]:
                out = []
                for lam in lams:
                    with steer(model, vec, lam):
                        out.append(extract_hidden_states(model, tok, sub, [last], max_length=args.max_length, progress=False, **kw))
                return out
            ti, indep, _ = timed(independent)
            own = max(float(np.abs(swept[j] - indep[j]).max()) for j in range(len(lams))) / float(np.abs(swept).max())
            ratio = f"{ts/ti:.2f} (diff {own:.2g})"
        table(f"| {args.shape} | {path} | {label} | {ts:.2f} | {sweep_mfu:.1%} | {ratio} | {diff:.2g} |")
    if args.cost_specs > 0:
        cost_check(model, tok, texts, cfg, inj, timed, table, args)


def cost_check(model, tok, texts, cfg, inj: int, timed, table, args: argparse.Namespace) -> None:
    """The capability cost's greedy generations (8 prompts, 24 new tokens): one generate() per (spec,
    lambda) run against the runs stacked in the batch dimension (driftlib.steer.capability.greedy_runs)."""
    try:
        from driftlib.steer.capability import greedy_continuations, greedy_runs
        from driftlib.steer.spec import SteeringSpec
    except ImportError as exc:
        table(f"cost check skipped ({exc})")
        return
    g = torch.Generator().manual_seed(1)
    runs = [None]
    for _ in range(args.cost_specs):
        spec = SteeringSpec(layers=(inj,)).with_vectors({inj: (torch.randn(cfg.hidden_size, generator=g) * 2.0).numpy()})
        runs += [spec.with_lam(lam) for lam in (0.25, 0.5, 0.75, 1.0)]
    prompts = [" ".join(t.split()[:24]) for t in texts[:8]]
    options = dict(max_new_tokens=24, batch_size=args.cost_batch)
    greedy_runs(model, tok, prompts, runs[:3], **options)  # warm-up
    t_one, one, _ = timed(lambda: [greedy_continuations(model, tok, prompts, r, r.lam if r else 0.0, **options)
                                   for r in runs])
    t_stack, stacked, _ = timed(lambda: greedy_runs(model, tok, prompts, runs, **options))
    table(f"\n{args.shape}: the cost's greedy generations, {len(prompts)} prompts x {len(runs)} runs "
          f"({args.cost_specs} specs x 4 lambdas + unsteered), 24 new tokens, batch {args.cost_batch}")
    table("| shape | one generate() per run s | stacked s | stacked / one per run | identical |")
    table("|---|---|---|---|---|")
    table(f"| {args.shape} | {t_one:.2f} | {t_stack:.2f} | {t_stack / t_one:.2f} | {one == stacked} |")


if __name__ == "__main__":
    sys.exit(main())
