"""A tiny model family, built from scratch on the bundled text, for the embedded default run.

The default workflow must run on a laptop CPU with no access to the Hugging Face Hub, so it builds
its own family of five decoder-only models, one per architecture the project studies (Llama,
Mistral, Qwen2, Phi-3, Gemma-2). Each member exists as a *base* model (a short causal-LM training
from random initialisation on ``data/corpus.txt``) and an *aligned* model (the base fine-tuned on
the chosen answers of ``data/preference_pairs.jsonl``, loss on assistant tokens only), so the
workflow has real base/aligned pairs whose hidden sizes and depths differ across architectures.

The members share one byte-level BPE tokenizer (:func:`train_tokenizer`) with a small chat template.
Every build is deterministic: the same seed gives bit-identical saved weights on the same machine.

Layout of one built model directory (loadable with ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained``)::

    config.json  generation_config.json  model.safetensors
    tokenizer.json  tokenizer_config.json  ...
    driftlib_tiny.json      # the build record: arch, seed, steps, loss curve, n_params (no timings:
                            # the same seed gives the same bytes)
    timing.json             # {"seconds": wall-clock build time}; nothing depends on it

:func:`build_family` builds the tokenizer and all members under one folder
(``tokenizer/``, ``{arch}-base/``, ``{arch}-aligned/``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from driftlib import __version__
from driftlib.core.artifacts import atomic_dir
from driftlib.core.errors import ConfigError, DataError, ModelError
from driftlib.datasets.pairs import parse_transcript as _parse_hh
from driftlib.model.families import TINY_ARCHS
from driftlib.model.training import (
    batches,
    collate,
    deterministic_torch,
    optimizer_step,
    progress_bar,
)

logger = logging.getLogger(__name__)

#: the special tokens of the tiny tokenizer, in id order (``<|pad|>`` is id 0)
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|pad|>", "<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>",
)
PAD, BOS, EOS, END = "<|pad|>", "<|bos|>", "<|eos|>", "<|end|>"
ROLES: tuple[str, ...] = ("system", "user", "assistant")

#: renders ``[{"role", "content"}, ...]`` as ``<|role|>content<|end|>`` per message, and a trailing
#: ``<|assistant|>`` when ``add_generation_prompt`` is set. It adds no BOS: the tokenizer's
#: post-processor puts ``<|bos|>`` in front of every encoding, so ``tokenizer(rendered)`` is right.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('unknown role: ' + message['role']) }}"
    "{%- endif -%}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>' }}{%- endif -%}"
)

#: the record written beside every built model (byte-identical for the same seed and versions)
RECORD_NAME = "driftlib_tiny.json"
#: the build's wall-clock time, kept out of the record so that the record stays reproducible
TIMING_NAME = "timing.json"


#: architectures that must run with eager attention
_EAGER = frozenset({"gemma2"})
MAX_POSITIONS = 512


# --------------------------------------------------------------------------------------------
# bundled data


def _read_data_text(name: str) -> str:
    """Return the text of the bundled file ``driftlib/data/<name>``."""
    ref = resources.files("driftlib") / "data" / name
    try:
        return ref.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(f"bundled data file driftlib/data/{name} is missing; "
                        "reinstall driftlib") from exc


def _read_jsonl(name: str) -> list[dict[str, Any]]:
    rows = []
    for lineno, line in enumerate(_read_data_text(name).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise DataError(f"driftlib/data/{name} line {lineno}: not JSON ({exc})") from exc
        if not isinstance(row, dict):
            raise DataError(f"driftlib/data/{name} line {lineno}: expected a JSON object")
        rows.append(row)
    return rows


def corpus_paragraphs() -> list[str]:
    """The paragraphs of the bundled ``corpus.txt`` (separated by blank lines), stripped."""
    text = _read_data_text("corpus.txt").replace("\r\n", "\n")
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text)]
    paragraphs = [p for p in paragraphs if p]
    if not paragraphs:
        raise DataError("driftlib/data/corpus.txt is empty")
    return paragraphs


def bundled_pairs() -> list[dict[str, str]]:
    """The bundled preference pairs (``chosen`` / ``rejected`` hh-rlhf transcripts)."""
    rows = _read_jsonl("preference_pairs.jsonl")
    for i, row in enumerate(rows, start=1):
        if not isinstance(row.get("chosen"), str) or not isinstance(row.get("rejected"), str):
            raise DataError(f"driftlib/data/preference_pairs.jsonl line {i}: needs string "
                            "'chosen' and 'rejected'")
    return rows


def bundled_prompts() -> list[str]:
    """The ``input`` texts of the bundled ``litmus_sample.jsonl``."""
    rows = _read_jsonl("litmus_sample.jsonl")
    return [str(r["input"]) for r in rows if r.get("input")]


def parse_transcript(text: str) -> list[dict[str, str]]:
    """Chat messages of an hh-rlhf transcript (:func:`driftlib.datasets.pairs.parse_transcript`).

    Raises :class:`DataError` when the transcript has no assistant turn to learn from.
    """
    messages = _parse_hh(text)
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"transcript has no '\\n\\nAssistant: ' turn: {text[:80]!r}")
    return messages


_DIALOGUE_LINE = re.compile(r"^(User|Assistant|System): ?(.*)$")


def parse_dialogue(paragraph: str) -> list[dict[str, str]] | None:
    """Parse a corpus paragraph of ``User: ...`` / ``Assistant: ...`` lines into messages.

    Returns ``None`` when the paragraph is prose (its first line has no speaker, or it has no
    assistant line). A line without a speaker continues the previous message.
    """
    lines = paragraph.split("\n")
    if not _DIALOGUE_LINE.match(lines[0]):
        return None
    messages: list[dict[str, str]] = []
    for line in lines:
        match = _DIALOGUE_LINE.match(line)
        if match:
            messages.append({"role": match.group(1).lower(), "content": match.group(2).strip()})
        else:
            messages[-1]["content"] = (messages[-1]["content"] + "\n" + line).strip()
    if not any(m["role"] == "assistant" for m in messages):
        return None
    return messages


def _pairs_chosen(pairs: Any) -> list[str]:
    """The ``chosen`` transcripts of ``pairs`` (None: bundled; a DataFrame; rows; strings)."""
    if pairs is None:
        return [row["chosen"] for row in bundled_pairs()]
    columns = getattr(pairs, "columns", None)
    if columns is not None:
        if "chosen" not in columns:
            raise DataError(f"pairs table has no 'chosen' column (columns: {list(columns)})")
        chosen = pairs["chosen"].tolist()
    else:
        chosen = [row["chosen"] if isinstance(row, dict) else row for row in pairs]
    bad = [i for i, c in enumerate(chosen) if not isinstance(c, str) or not c.strip()]
    if bad:
        raise DataError(f"pairs: 'chosen' is empty or not a string in row(s) {bad[:5]}")
    if not chosen:
        raise DataError("pairs: no rows")
    return chosen


# --------------------------------------------------------------------------------------------
# tokenizer


def train_tokenizer(out_dir: str | os.PathLike, *, vocab_size: int = 2048, seed: int = 0) -> Path:
    """Train the family's byte-level BPE tokenizer and save it with ``save_pretrained``.

    Trained on ``corpus.txt``, the preference-pair transcripts (chosen and rejected) and the
    LITMUS prompt texts. Special tokens (ids 0-6): :data:`SPECIAL_TOKENS`. The saved tokenizer
    adds ``<|bos|>`` in front of every encoding, pads on the left, and carries
    :data:`CHAT_TEMPLATE`. Returns ``out_dir``.

    Deterministic: BPE training counts byte pairs, so the result depends only on the bundled
    data and ``vocab_size`` (checked across processes), not on the text order. ``seed`` is
    accepted so that every builder has the same signature; it does not change the result.
    """
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
        raise ConfigError(f"tiny.vocab_size must be > {256 + len(SPECIAL_TOKENS)}, "
                          f"got {vocab_size}")
    texts = corpus_paragraphs()
    for row in bundled_pairs():
        texts.extend((row["chosen"], row["rejected"]))
    texts.extend(bundled_prompts())
    texts = list(dict.fromkeys(texts))  # drop exact duplicates, keep first-seen order
    del seed  # see the docstring: BPE training does not depend on it

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B:1", special_tokens=[(BOS, bos_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        padding_side="left", model_max_length=MAX_POSITIONS,
    )
    fast.chat_template = CHAT_TEMPLATE
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        fast.save_pretrained(tmp)
    logger.info("tokenizer: %d tokens from %d texts -> %s", len(fast), len(texts), out)
    return out


def _load_tokenizer(path: str | os.PathLike) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the tiny tokenizer from {path}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# models


def tiny_config(arch: str, tokenizer: Any) -> Any:
    """The transformers config of tiny ``arch`` for ``tokenizer`` (vocab and special ids)."""
    import transformers

    if arch not in TINY_ARCHS:
        raise ConfigError(f"tiny arch '{arch}' is unknown; choose one of {sorted(TINY_ARCHS)}")
    spec = dict(TINY_ARCHS[arch])
    config_class = getattr(transformers, spec.pop("config_class"))
    config = config_class(
        vocab_size=len(tokenizer), max_position_embeddings=MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, **spec,
    )
    return config


def _new_model(arch: str, tokenizer: Any) -> Any:
    from transformers import AutoModelForCausalLM, GenerationConfig

    config = tiny_config(arch, tokenizer)
    kwargs = {"attn_implementation": "eager"} if arch in _EAGER else {}
    model = AutoModelForCausalLM.from_config(config, **kwargs)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(END)],
    )
    return model


def load_tiny(model_dir: str | os.PathLike) -> tuple[Any, Any]:
    """Load a built tiny model and its tokenizer (eager attention where the arch needs it)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(model_dir)
    try:
        config = AutoConfig.from_pretrained(str(path))
        kwargs = {"attn_implementation": "eager"} if config.model_type in _EAGER else {}
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load a tiny model from {path}: {exc}") from exc
    return model, _load_tokenizer(path)


def read_record(model_dir: str | os.PathLike) -> dict[str, Any]:
    """The build record (``driftlib_tiny.json``) of a built tiny model."""
    path = Path(model_dir) / RECORD_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: no readable tiny build record ({exc})") from exc


def _lr_lambda(steps: int) -> Any:
    """Linear warm-up over 10% of the steps, then cosine decay to 10% of the peak."""
    warmup = max(1, steps // 10)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _n_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def _save(model: Any, tokenizer: Any, record: dict[str, Any], out: Path) -> None:
    """Save the model, its tokenizer and its record; the record's ``seconds`` go to ``timing.json``."""
    kept = {k: v for k, v in record.items() if k != "seconds"}
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / RECORD_NAME).write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n",
                                       encoding="utf-8")
        if "seconds" in record:
            (tmp / TIMING_NAME).write_text(json.dumps({"seconds": record["seconds"]}) + "\n",
                                           encoding="utf-8")


def _validate_steps(**values: int | float) -> None:
    for key, value in values.items():
        if not value > 0:
            raise ConfigError(f"tiny.{key} must be positive, got {value}")


def _base_texts(tokenizer: Any) -> list[str]:
    """Training texts of the base models: corpus prose, and its dialogues in chat form."""
    texts = []
    n_dialogues = 0
    for paragraph in corpus_paragraphs():
        messages = parse_dialogue(paragraph)
        if messages is None:
            texts.append(paragraph)
        else:
            texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
            n_dialogues += 1
    logger.debug("base texts: %d paragraphs, %d of them dialogues", len(texts), n_dialogues)
    return texts


def _token_stream(tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    """Concatenate the texts' token ids, each text followed by EOS (no BOS: added per window)."""
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    for encoded in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]:
        ids.extend(encoded)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def unigram_entropy(ids: torch.Tensor) -> float:
    """Entropy (nats) of the empirical unigram distribution of ``ids``: the loss to beat."""
    counts = torch.bincount(ids.flatten()).double()
    probs = counts[counts > 0] / counts.sum()
    return float(-(probs * probs.log()).sum())


def build_base(arch: str, tokenizer_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
               steps: int = 200, batch_size: int = 16, seq_len: int = 64, lr: float = 3e-3,
               seed: int = 0, threads: int = 1, progress: bool = True) -> dict[str, Any]:
    """Train tiny ``arch`` from random init on the bundled corpus and save it to ``out_dir``.

    Each training row is ``<|bos|>`` followed by ``seq_len - 1`` tokens of the corpus stream
    (paragraphs separated by EOS; the corpus' ``User:/Assistant:`` dialogues rendered through the
    chat template), taken at seeded random offsets. AdamW with warm-up and cosine decay, gradient
    clipping at 1. Saves the model (safetensors), the tokenizer, ``driftlib_tiny.json`` and
    ``timing.json``; returns the record (arch, seed, steps, loss_curve, final_loss, unigram_entropy,
    n_params, ...) with the build's ``seconds``, which only ``timing.json`` holds on disk.

    ``threads`` is the torch CPU thread count during the build (restored afterwards). One thread
    is the default: these models are too small to gain much from more, a second thread makes a
    build several times slower when the cores are shared (parallel Snakemake jobs), and the
    saved weights are bit-identical only for the same thread count.
    """
    _validate_steps(steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, threads=threads)
    if arch not in TINY_ARCHS:
        raise ConfigError(f"tiny arch '{arch}' is unknown; choose one of {sorted(TINY_ARCHS)}")
    if seq_len > MAX_POSITIONS:
        raise ConfigError(f"tiny.seq_len must be <= {MAX_POSITIONS}, got {seq_len}")
    start = time.perf_counter()
    tokenizer = _load_tokenizer(tokenizer_dir)
    stream = _token_stream(tokenizer, _base_texts(tokenizer))
    span = seq_len - 1
    if len(stream) <= span:
        raise DataError(f"the corpus has only {len(stream)} tokens; need more than {span}")
    with deterministic_torch(seed, threads):
        model = _new_model(arch, tokenizer)
        model.train()
        gen = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01,
                                      betas=(0.9, 0.98))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(steps))
        bos = torch.full((batch_size, 1), tokenizer.bos_token_id, dtype=torch.long)
        offsets_arange = torch.arange(span)
        losses: list[float] = []
        bar = progress_bar(range(steps), desc=f"tiny {arch} base", enabled=progress)
        for _ in bar:
            starts = torch.randint(0, len(stream) - span + 1, (batch_size, 1), generator=gen)
            input_ids = torch.cat([bos, stream[starts + offsets_arange]], dim=1)
            labels = input_ids.clone()
            labels[:, 0] = -100
            loss = model(input_ids=input_ids, labels=labels).loss
            optimizer_step(model, loss, optimizer, schedule, losses, f"tiny {arch} base")
            if progress:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        model.eval()
        n_params = _n_params(model)
        record = {
            "kind": "base", "arch": arch, "seed": seed, "steps": steps, "batch_size": batch_size,
            "seq_len": seq_len, "lr": lr, "threads": threads, "loss_curve": losses,
            "final_loss": _tail_mean(losses), "unigram_entropy": round(unigram_entropy(stream), 5),
            "n_train_tokens": int(len(stream)), "n_params": n_params,
            "hidden_size": int(model.config.hidden_size),
            "num_hidden_layers": int(model.config.num_hidden_layers),
            "vocab_size": int(model.config.vocab_size),
            "data_fingerprint": hashlib.sha256(stream.numpy().tobytes()).hexdigest()[:16],
            **_versions(),
        }
        record["seconds"] = round(time.perf_counter() - start, 2)
        _save(model, tokenizer, record, Path(out_dir))
    logger.info("tiny %s base: %d params, loss %.3f -> %.3f (unigram entropy %.3f), %.1fs -> %s",
                arch, n_params, losses[0], record["final_loss"], record["unigram_entropy"],
                record["seconds"], out_dir)
    return record


def _tail_mean(losses: Sequence[float], n: int = 10) -> float:
    tail = losses[-n:]
    return round(sum(tail) / len(tail), 5)


def _versions() -> dict[str, str]:
    import transformers

    return {"driftlib_version": __version__, "torch_version": torch.__version__,
            "transformers_version": transformers.__version__}


# --------------------------------------------------------------------------------------------
# alignment fine-tuning


def encode_chat(tokenizer: Any, messages: Sequence[dict[str, str]], *,
                max_len: int = 96) -> tuple[list[int], list[int]]:
    """Token ids of a chat rendered by the tokenizer's template, and labels for assistant tokens.

    Labels equal the ids on each assistant message's content and its ``<|end|>`` token and are
    -100 elsewhere (BOS, role markers, user and system text). Over ``max_len`` tokens, the
    sequence is truncated from the LEFT (the end of a preference transcript is where chosen and
    rejected differ), keeping BOS as the first token.
    """
    text = tokenizer.apply_chat_template(list(messages), tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        begin = len(tokenizer.apply_chat_template(list(messages[:i]), tokenize=False)) if i else 0
        begin += len("<|assistant|>")
        end = len(tokenizer.apply_chat_template(list(messages[: i + 1]), tokenize=False))
        spans.append((begin, end))
    enc = tokenizer(text, return_offsets_mapping=True, verbose=False)
    ids: list[int] = enc["input_ids"]
    labels = [-100] * len(ids)
    for k, (a, b) in enumerate(enc["offset_mapping"]):
        if b > a and any(begin <= a and b <= end for begin, end in spans):
            labels[k] = ids[k]
    if len(ids) > max_len:
        ids = ids[:1] + ids[len(ids) - max_len + 1:]
        labels = [-100] + labels[len(labels) - max_len + 1:]
    return ids, labels


def _encode_pairs(tokenizer: Any, chosen: Sequence[str],
                  max_len: int) -> list[tuple[list[int], list[int]]]:
    rows = []
    for i, transcript in enumerate(chosen):
        try:
            ids, labels = encode_chat(tokenizer, parse_transcript(transcript), max_len=max_len)
        except DataError as exc:
            raise DataError(f"pairs row {i}: {exc}") from exc
        if any(label != -100 for label in labels):
            rows.append((ids, labels))
    if not rows:
        raise DataError("pairs: no row has assistant tokens left after truncation")
    return rows


def build_aligned(base_dir: str | os.PathLike, out_dir: str | os.PathLike, *, pairs: Any = None,
                  steps: int = 100, batch_size: int = 16, lr: float = 1e-3, seed: int = 0,
                  max_len: int = 96, threads: int = 1, progress: bool = True) -> dict[str, Any]:
    """Fine-tune the tiny base model in ``base_dir`` toward the chosen answers of preference pairs.

    ``pairs``: None for the bundled ``preference_pairs.jsonl``, or a DataFrame (or list of dicts)
    with a ``chosen`` column of hh-rlhf transcripts. Each transcript is rendered through the chat
    template (Human -> user, Assistant -> assistant) and the loss is taken on assistant tokens
    only (:func:`encode_chat`); transcripts longer than ``max_len`` tokens lose their beginning.
    Saves like :func:`build_base`; returns the record.
    """
    _validate_steps(steps=steps, batch_size=batch_size, lr=lr, max_len=max_len, threads=threads)
    start = time.perf_counter()
    base_record = read_record(base_dir)
    model, tokenizer = load_tiny(base_dir)
    rows = _encode_pairs(tokenizer, _pairs_chosen(pairs), max_len)
    arch = base_record.get("arch", model.config.model_type)
    with deterministic_torch(seed, threads):
        model.train()
        gen = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01,
                                      betas=(0.9, 0.98))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(steps))
        losses: list[float] = []
        bar = progress_bar(batches(len(rows), batch_size, steps, gen), desc=f"tiny {arch} aligned",
                        enabled=progress)
        for batch_idx in bar:
            batch = collate([rows[i] for i in batch_idx], tokenizer.pad_token_id)
            loss = model(**batch).loss
            optimizer_step(model, loss, optimizer, schedule, losses, f"tiny {arch} aligned")
            if progress:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        model.eval()
        record = {
            "kind": "aligned", "arch": arch, "base_dir": str(base_dir),
            "base_seed": base_record.get("seed"), "seed": seed, "steps": steps,
            "batch_size": batch_size, "lr": lr, "max_len": max_len, "threads": threads,
            "n_pairs": len(rows),
            "loss_curve": losses, "final_loss": _tail_mean(losses), "n_params": _n_params(model),
            "hidden_size": int(model.config.hidden_size),
            "num_hidden_layers": int(model.config.num_hidden_layers),
            "vocab_size": int(model.config.vocab_size),
            "data_fingerprint": hashlib.sha256(
                json.dumps(rows, separators=(",", ":")).encode()).hexdigest()[:16],
            **_versions(),
        }
        record["seconds"] = round(time.perf_counter() - start, 2)
        _save(model, tokenizer, record, Path(out_dir))
    logger.info("tiny %s aligned: loss %.3f -> %.3f on %d pairs, %.1fs -> %s", arch, losses[0],
                record["final_loss"], len(rows), record["seconds"], out_dir)
    return record


@torch.no_grad()
def chosen_loss(model_dir: str | os.PathLike, pairs: Any = None, *, max_len: int = 96,
                batch_size: int = 16, threads: int = 1) -> float:
    """Mean cross-entropy (nats/token) of a tiny model on the assistant tokens of chosen answers.

    Same encoding as :func:`build_aligned`, so the aligned model's value can be compared with its
    base's on the training pairs or on held-out ones.
    """
    model, tokenizer = load_tiny(model_dir)
    model.eval()
    rows = _encode_pairs(tokenizer, _pairs_chosen(pairs), max_len)
    total, count = 0.0, 0
    with deterministic_torch(0, threads):
        for i in range(0, len(rows), batch_size):
            batch = collate(rows[i: i + batch_size], tokenizer.pad_token_id)
            logits = model(input_ids=batch["input_ids"],
                           attention_mask=batch["attention_mask"]).logits
            labels = batch["labels"][:, 1:]
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=-100,
                reduction="sum")
            total += float(nll)
            count += int((labels != -100).sum())
    return total / count


# --------------------------------------------------------------------------------------------
# the whole family


def build_family(out_dir: str | os.PathLike, *, archs: Sequence[str] | None = None,
                 vocab_size: int = 2048, base_steps: int = 200, aligned_steps: int = 100,
                 seed: int = 0, threads: int = 1, progress: bool = True) -> dict[str, Any]:
    """Build the tokenizer and a base and an aligned model per arch under ``out_dir``.

    Layout: ``tokenizer/``, ``{arch}-base/``, ``{arch}-aligned/``. Returns
    ``{"tokenizer": path, "models": {arch: {"base": record, "aligned": record}}, "seconds": s}``.
    """
    archs = list(archs or TINY_ARCHS)
    unknown = [a for a in archs if a not in TINY_ARCHS]
    if unknown:
        raise ConfigError(f"tiny archs {unknown} are unknown; choose from {sorted(TINY_ARCHS)}")
    start = time.perf_counter()
    root = Path(out_dir)
    tok_dir = train_tokenizer(root / "tokenizer", vocab_size=vocab_size, seed=seed)
    models: dict[str, dict[str, Any]] = {}
    for arch in archs:
        base = build_base(arch, tok_dir, root / f"{arch}-base", steps=base_steps, seed=seed,
                          threads=threads, progress=progress)
        aligned = build_aligned(root / f"{arch}-base", root / f"{arch}-aligned",
                                steps=aligned_steps, seed=seed, threads=threads,
                                progress=progress)
        models[arch] = {"base": base, "aligned": aligned}
    return {"tokenizer": str(tok_dir), "models": models,
            "seconds": round(time.perf_counter() - start, 2)}
