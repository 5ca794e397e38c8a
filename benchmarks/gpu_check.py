"""GPU check: extraction and a lambda sweep on a random-weight model of a real shape in bf16.

Prints, for several batch sizes, real tokens per second, the time against a bare
``model(**batch)`` loop over the same batches, and the model FLOPs utilisation (MFU: 2 x
non-embedding parameters x real tokens per second / the card's dense bf16 peak). Then a lambda
sweep against independent steered evaluations when :mod:`driftlib.steer.sweep` is present.

Shapes: Llama-3.2-1B, Llama-3.2-3B (default) and Llama-3.1-8B (``--shape``).
Run on a GPU machine from the repository root:  PYTHONPATH=src python3 benchmarks/gpu_check.py
Nothing is downloaded: the tokenizer is trained on the spot and the weights are random.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}
#: real model shapes (Llama-3.2-1B, Llama-3.2-3B, Llama-3.1-8B), random weights
SHAPES = {
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8),
    "llama-3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                     num_key_value_heads=8),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8),
}


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="llama-3b", choices=sorted(SHAPES))
    ap.add_argument("--n-texts", type=int, default=512)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--max-length", type=int, default=512)
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, LlamaConfig

    from driftlib.model.forward import extract_hidden_states

    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_BF16.items() if k in name), 989e12)
    cfg = LlamaConfig(**SHAPES[args.shape], vocab_size=128256, max_position_embeddings=8192)
    t0 = time.perf_counter()
    with torch.device(dev):
        try:
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        except TypeError:  # transformers < 4.56 calls it torch_dtype
            model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16)
    model.eval()
    torch.cuda.synchronize()
    n_params = sum(p.numel() for p in model.parameters())
    n_body = n_params - model.get_input_embeddings().weight.numel() - (0 if cfg.tie_word_embeddings else model.lm_head.weight.numel())
    print(f"device {name}; {args.shape}: {n_params/1e9:.2f}B params ({n_body/1e9:.2f}B non-embedding), built in {time.perf_counter()-t0:.1f}s")
    tok, words = make_tokenizer(cfg.vocab_size)
    rng = random.Random(1)
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(32, args.max_length - 8))) for _ in range(args.n_texts)]
    n_tokens = sum(min(len(tok(t)["input_ids"]), args.max_length) for t in texts)
    last = cfg.num_hidden_layers - 1

    def bare(bs: int) -> float:
        torch.cuda.synchronize(); t = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(texts), bs):
                batch = tok(texts[i:i + bs], return_tensors="pt", padding=True, truncation=True, max_length=args.max_length).to(dev)
                model(**batch)
        torch.cuda.synchronize()
        return time.perf_counter() - t

    extract_hidden_states(model, tok, texts[:32], [last], batch_size=16, max_length=args.max_length, progress=False)  # warm-up
    print(f"{args.n_texts} texts, {n_tokens} real tokens, max_length {args.max_length}, reading block {last} (mean pool)")
    print("batch  extract_s  bare_s  ratio  tokens/s   MFU   peak_mem_GiB")
    for bs in args.batch_sizes:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize(); t = time.perf_counter()
        hidden = extract_hidden_states(model, tok, texts, [last], batch_size=bs, max_length=args.max_length, progress=False)
        torch.cuda.synchronize(); te = time.perf_counter() - t
        mem = torch.cuda.max_memory_allocated() / 2**30
        tb = bare(bs)
        mfu = 2 * n_body * n_tokens / te / peak
        print(f"{bs:5d}  {te:9.2f}  {tb:6.2f}  {te/tb:5.2f}  {n_tokens/te:8.0f}  {mfu:5.1%}  {mem:6.1f}")
        assert hidden.shape == (len(texts), 1, cfg.hidden_size) and bool(torch.isfinite(torch.from_numpy(hidden)).all())

    try:
        from driftlib.steer.hooks import steer
        from driftlib.steer.sweep import sweep_hidden_states
    except ImportError as exc:
        print(f"sweep check skipped ({exc})")
        return
    inj = int(cfg.num_hidden_layers * 0.75)
    g = torch.Generator().manual_seed(0)
    vec = {inj: (torch.randn(cfg.hidden_size, generator=g) * 2.0).numpy()}
    lams = [0.0, 0.25, 0.5, 0.75, 1.0]
    sub = texts[:256]
    bs = args.batch_sizes[-1]
    torch.cuda.synchronize(); t = time.perf_counter()
    swept = sweep_hidden_states(model, tok, sub, vec, lams, [last], batch_size=bs, max_length=args.max_length, progress=False)
    torch.cuda.synchronize(); ts = time.perf_counter() - t
    t = time.perf_counter(); indep = []
    for lam in lams:
        with steer(model, vec, lam):
            indep.append(extract_hidden_states(model, tok, sub, [last], batch_size=bs, max_length=args.max_length, progress=False))
    torch.cuda.synchronize(); ti = time.perf_counter() - t
    diff = max(float(abs(swept[i] - indep[i]).max()) for i in range(len(lams)))
    scale = max(float(abs(x).max()) for x in indep)
    sub_tokens = sum(min(len(tok(t)["input_ids"]), args.max_length) for t in sub)
    # block passes the sweep needs: the prefix once, blocks inj..last once per lambda
    blocks = inj + len(lams) * (last - inj + 1)
    sweep_mfu = 2 * n_body * sub_tokens * blocks / cfg.num_hidden_layers / ts / peak
    print(f"sweep of 5 lambdas, injection at block {inj}: {ts:.2f}s vs 5 independent {ti:.2f}s (ratio {ts/ti:.2f}); "
          f"{sub_tokens * len(lams) / ts:.0f} steered tokens/s, MFU {sweep_mfu:.1%}; "
          f"max abs diff {diff:.3g} (bf16; max |h| {scale:.3g})")


if __name__ == "__main__":
    main()
