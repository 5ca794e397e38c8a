"""A tiny model family, built from scratch, for the embedded default run.

The default workflow must run on a laptop CPU with no access to the Hugging Face Hub, so it builds
its own family of five decoder-only models, one per architecture the project studies (Llama,
Mistral, Qwen2, Phi-3, Gemma-2). Each member exists as a *base* model (a short causal-LM training
from random initialisation on a corpus) and an *aligned* model (the base fine-tuned on the chosen
answers of preference pairs or chats, loss on assistant tokens only), so the workflow has real
base/aligned pairs whose hidden sizes and depths differ across architectures.

Two sources of text: the bundled ``data/corpus.txt`` and ``data/preference_pairs.jsonl`` (the
default of every builder), or a synthetic world (:mod:`driftlib.datasets.synthetic`; the
embedded default): its ``corpus.txt`` for the base (answers drawn independently of safety) and
its ``align.jsonl`` chats for the aligned model (unsafe -> refusal, safe -> help), passed as
``corpus=`` and ``pairs=`` (``docs/synthetic_world.md``). A world's base can also be given its
``judgements.txt`` (``judgement=``, :class:`JudgementStage`): the world's judgement of safety is
then planted in its lower blocks, and it answers again without acting on it.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from driftlib import __version__
from driftlib.core.artifacts import atomic_dir
from driftlib.core.errors import ConfigError, DataError, ModelError
from driftlib.datasets.pairs import parse_transcript as _parse_hh
from driftlib.model.families import TINY_ARCHS
from driftlib.model.pooling import last_token_pool
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


def corpus_paragraphs(corpus: str | os.PathLike | None = None) -> list[str]:
    """The paragraphs of a corpus file (separated by blank lines), stripped.

    Args:
        corpus: a text file in the form of ``corpus.txt`` (e.g. a synthetic world's,
            :func:`driftlib.datasets.synthetic.write_world`); None: the bundled ``corpus.txt``.
    """
    if corpus is None:
        name, text = "driftlib/data/corpus.txt", _read_data_text("corpus.txt")
    else:
        name = str(corpus)
        try:
            text = Path(corpus).read_text(encoding="utf-8")
        except OSError as exc:
            raise DataError(f"cannot read the corpus {corpus}: {exc}") from exc
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n"))]
    paragraphs = [p for p in paragraphs if p]
    if not paragraphs:
        raise DataError(f"{name} is empty")
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
    return _pairs_column(pairs, "chosen")


def _pairs_column(pairs: Any, key: str) -> list[str]:
    """The ``key`` transcripts of ``pairs`` (None: bundled; a DataFrame; rows; strings)."""
    if pairs is None:
        return [row[key] for row in bundled_pairs()]
    columns = getattr(pairs, "columns", None)
    if columns is not None:
        if key not in columns:
            raise DataError(f"pairs table has no '{key}' column (columns: {list(columns)})")
        texts = pairs[key].tolist()
    else:
        texts = [row[key] if isinstance(row, dict) else row for row in pairs]
    bad = [i for i, c in enumerate(texts) if not isinstance(c, str) or not c.strip()]
    if bad:
        raise DataError(f"pairs: '{key}' is empty or not a string in row(s) {bad[:5]}")
    if not texts:
        raise DataError("pairs: no rows")
    return texts


def load_pairs_file(path: str | os.PathLike) -> Any:
    """Preference pairs (hh-rlhf form) from a local file, as a frame with ``chosen`` and ``rejected``
    (:func:`driftlib.datasets.pairs.load_pairs`; a synthetic world's ``align.jsonl`` reads as is)."""
    from driftlib.datasets.pairs import load_pairs

    frame, _ = load_pairs(str(path))
    return frame


# --------------------------------------------------------------------------------------------
# tokenizer


def tokenizer_texts(corpus: str | os.PathLike | None = None, pairs: Any = None) -> list[str]:
    """The texts the tokenizer is trained on, exact duplicates dropped (first-seen order kept).

    Args:
        corpus: a corpus file (:func:`corpus_paragraphs`), or None for the bundled data: its
            ``corpus.txt``, preference pairs (chosen and rejected) and LITMUS prompt texts.
        pairs: with a ``corpus``, pairs whose chosen and rejected transcripts are added (a frame or
            rows, e.g. :func:`load_pairs_file` of a world's ``align.jsonl``); None: none.
    """
    texts = corpus_paragraphs(corpus)
    if corpus is None:
        for row in bundled_pairs():
            texts.extend((row["chosen"], row["rejected"]))
        texts.extend(bundled_prompts())
    elif pairs is not None:
        for chosen, rejected in zip(_pairs_column(pairs, "chosen"), _pairs_column(pairs, "rejected")):
            texts.extend((chosen, rejected))
    return list(dict.fromkeys(texts))


def train_tokenizer(out_dir: str | os.PathLike, *, vocab_size: int = 2048, seed: int = 0,
                    corpus: str | os.PathLike | None = None, pairs: Any = None) -> Path:
    """Train the family's byte-level BPE tokenizer and save it with ``save_pretrained``.

    Trained on :func:`tokenizer_texts` (``corpus``, ``pairs``): by default the bundled
    ``corpus.txt``, the preference-pair transcripts (chosen and rejected) and the LITMUS prompt
    texts. Special tokens (ids 0-6): :data:`SPECIAL_TOKENS`. The saved tokenizer
    adds ``<|bos|>`` in front of every encoding, pads on the left, and carries
    :data:`CHAT_TEMPLATE`. Returns ``out_dir``.

    Deterministic: BPE training counts byte pairs, so the result depends only on the texts and
    ``vocab_size`` (checked across processes), not on the text order. ``seed`` is
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
    texts = tokenizer_texts(corpus, pairs)
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


def new_model(arch: str, tokenizer: Any) -> Any:
    """A tiny ``arch`` model with random weights (torch's current seed) for ``tokenizer``, generating
    until the end of the turn."""
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


def _lr_lambda(steps: int, hold: float = 0.0) -> Any:
    """Linear warm-up over 10% of the steps, the peak held until ``hold`` of the steps, then cosine
    decay to 10% of the peak."""
    warmup = max(1, steps // 10)
    flat = max(warmup, int(steps * hold))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if step < flat:
            return 1.0
        progress = (step - flat) / max(1, steps - flat)
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


def _base_texts(tokenizer: Any, corpus: str | os.PathLike | None = None,
                keep: Callable[[list[dict[str, str]]], bool] | None = None) -> list[str]:
    """Training texts of the base models: corpus prose, and its dialogues in chat form (those that
    ``keep(messages)`` accepts, where it is given)."""
    texts = []
    n_dialogues = 0
    for paragraph in corpus_paragraphs(corpus):
        messages = parse_dialogue(paragraph)
        if messages is None:
            texts.append(paragraph)
        elif keep is None or keep(messages):
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


def paragraph_rows(tokenizer: Any, texts: Sequence[str], seq_len: int) -> list[tuple[list[int], list[int]]]:
    """Training rows of the base models: one per text, or per ``seq_len``-token piece of a long one.

    Each row is ``<|bos|>`` followed by at most ``seq_len - 1`` tokens of one text (the text's
    last piece ends with EOS); labels equal the ids except at the BOS (-100). A dialogue thus
    always starts a row, so every answer is read after its request (a random window of a token
    stream would often cut the request off and teach the model to answer without reading it).

    Args:
        tokenizer: the tiny tokenizer.
        texts: ``n`` training texts (:func:`_base_texts`).
        seq_len: the longest row, in tokens (BOS included).

    Returns:
        ``[(ids, labels), ...]``, at least ``n`` rows, in text order.
    """
    bos, eos, span = tokenizer.bos_token_id, tokenizer.eos_token_id, seq_len - 1
    rows: list[tuple[list[int], list[int]]] = []
    for encoded in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]:
        tokens = [*encoded, eos]
        for i in range(0, len(tokens), span):
            ids = [bos, *tokens[i: i + span]]
            rows.append((ids, [-100, *ids[1:]]))
    return rows


def unigram_entropy(ids: torch.Tensor) -> float:
    """Entropy (nats) of the empirical unigram distribution of ``ids``: the loss to beat."""
    counts = torch.bincount(ids.flatten()).double()
    probs = counts[counts > 0] / counts.sum()
    return float(-(probs * probs.log()).sum())


def build_base(arch: str, tokenizer_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
               steps: int = 200, batch_size: int = 16, seq_len: int = 96, lr: float = 3e-3,
               seed: int = 0, threads: int = 1, progress: bool = True,
               corpus: str | os.PathLike | None = None,
               judgement: JudgementStage | None = None) -> dict[str, Any]:
    """Train tiny ``arch`` from random init on a corpus and save it to ``out_dir``.

    ``corpus``: a corpus file (:func:`corpus_paragraphs`; e.g. a synthetic world's ``corpus.txt``),
    None for the bundled ``corpus.txt``.

    Each training row is one corpus paragraph (:func:`paragraph_rows`: ``<|bos|>``, the paragraph,
    EOS; long paragraphs are cut into ``seq_len``-token pieces; the corpus' ``User:/Assistant:``
    dialogues rendered through the chat template), in seeded epochs, padded per batch. AdamW with
    warm-up and cosine decay, gradient clipping at 1. Saves the model (safetensors), the tokenizer,
    ``driftlib_tiny.json`` and ``timing.json``; returns the record (arch, seed, steps, loss_curve,
    final_loss, unigram_entropy, n_params, ...) with the build's ``seconds``, which only
    ``timing.json`` holds on disk.

    ``threads`` is the torch CPU thread count during the build (restored afterwards). One thread
    is the default: these models are too small to gain much from more, a second thread makes a
    build several times slower when the cores are shared (parallel Snakemake jobs), and the
    saved weights are bit-identical only for the same thread count.

    ``judgement``: two more stages after the corpus (:class:`JudgementStage`,
    :func:`judgement_stages`), so that the base computes a request's safety in its lower blocks
    but answers without acting on it. None: the corpus stage only.
    """
    _validate_steps(steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, threads=threads)
    if arch not in TINY_ARCHS:
        raise ConfigError(f"tiny arch '{arch}' is unknown; choose one of {sorted(TINY_ARCHS)}")
    if seq_len > MAX_POSITIONS:
        raise ConfigError(f"tiny.seq_len must be <= {MAX_POSITIONS}, got {seq_len}")
    start = time.perf_counter()
    tokenizer = _load_tokenizer(tokenizer_dir)
    texts = _base_texts(tokenizer, corpus)
    stream = _token_stream(tokenizer, texts)
    rows = paragraph_rows(tokenizer, texts, seq_len)
    with deterministic_torch(seed, threads):
        model = new_model(arch, tokenizer)
        model.train()
        gen = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01,
                                      betas=(0.9, 0.98))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(steps))
        losses: list[float] = []
        bar = progress_bar(batches(len(rows), batch_size, steps, gen), desc=f"tiny {arch} base",
                           enabled=progress)
        for batch_idx in bar:
            loss = model(**collate([rows[i] for i in batch_idx], tokenizer.pad_token_id)).loss
            optimizer_step(model, loss, optimizer, schedule, losses, f"tiny {arch} base")
            if progress:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        extra = {} if judgement is None else judgement_stages(model, tokenizer, judgement, corpus=corpus,
                                                               batch_size=batch_size, seq_len=seq_len,
                                                               seed=seed, progress=progress)
        model.eval()
        n_params = _n_params(model)
        record = {
            **extra,
            "kind": "base", "arch": arch, "seed": seed, "steps": steps, "batch_size": batch_size,
            "seq_len": seq_len, "lr": lr, "threads": threads, "loss_curve": losses,
            "final_loss": _tail_mean(losses), "unigram_entropy": round(unigram_entropy(stream), 5),
            "n_train_tokens": int(len(stream)), "n_rows": len(rows), "n_params": n_params,
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


@dataclass(frozen=True)
class JudgementStage:
    """How a tiny base comes to judge requests without acting on the judgement.

    Args:
        judgements: a corpus-form file of judged requests (a synthetic world's ``judgements.txt``:
            a request, answered "Kind. ..." (safe) or "Cruel. ..." (unsafe)).
        steps: steps of the judgement stage (only the embeddings and the blocks up to ``depth``
            learn).
        margin: the planted feature's size: at the block at ``depth``, the last token of each
            chat-rendered request is moved ``margin`` standard deviations (of the states'
            projections on it before the stage) along a fixed random unit direction, forward if
            the request is unsafe, backward if it is safe, and kept where it was otherwise.
        answer_steps: steps of the answer stage afterwards: the blocks above ``depth`` and the
            output layers learn the corpus' compliant dialogues and prose again, with the
            embeddings and the blocks up to ``depth`` frozen.
        depth: the block a steering condition reads: the last block that learns the judgement
            (a relative depth or a block index, or several, of which the shallowest counts, as
            :func:`driftlib.core.layerspec.resolve_layers` resolves them; the workflow passes the
            condition's layer, by default the first injection layer).
        lr: peak learning rate of both stages (held for 3/4 of the steps).
    """

    judgements: str | os.PathLike
    steps: int = 300
    margin: float = 2.0
    answer_steps: int = 150
    depth: float | int | Sequence[float | int] = 0.5
    lr: float = 3e-3


def read_judgements(path: str | os.PathLike) -> tuple[list[str], list[bool]]:
    """The requests of a judgements file and whether each is unsafe (its answer starts "Cruel")."""
    requests, unsafe = [], []
    for messages in (parse_dialogue(p) for p in corpus_paragraphs(path)):
        if not messages or messages[0]["role"] != "user" or messages[-1]["role"] != "assistant":
            continue
        verdict = messages[-1]["content"].split(".", 1)[0].strip().lower()
        if verdict not in ("kind", "cruel"):
            raise DataError(f"{path}: a judgement starts with 'Kind.' or 'Cruel.', not {messages[-1]['content'][:20]!r}")
        requests.append(messages[0]["content"])
        unsafe.append(verdict == "cruel")
    if not requests:
        raise DataError(f"{path}: no judged requests")
    return requests, unsafe


def judgement_stages(model: Any, tokenizer: Any, stage: JudgementStage, *, corpus: str | os.PathLike | None,
                     batch_size: int, seq_len: int, seed: int, progress: bool) -> dict[str, Any]:
    """Plant the world's judgement in a pre-trained base's lower blocks, then let it answer again.

    1. **Judgement**: for each judged request (chat-rendered, the generation prompt appended), the
       state ``h`` of its last token at block ``k`` (the block at ``stage.depth``) is trained
       toward ``h_before + margin * sd * s * u``: ``u`` a fixed random unit direction, ``sd`` the
       standard deviation of the projections ``h_before @ u``, ``s`` +1 for an unsafe request
       and -1 for a safe one. The loss is the squared error along ``u`` (over ``sd**2``) plus the
       squared change across ``u`` (over the states' mean variance per dimension). Only the input
       embeddings and blocks ``0..k`` learn, so safety is computed by block ``k``, where a
       steering condition reads it; and the state moves along ``u`` only, by a known size, so
       the classes' mean difference is the planted feature (without the second term the lower
       blocks left larger label-dependent changes elsewhere, and a mean-difference condition
       read those: accuracy 0.75 in the tiny mistral), and the bases' own separation stays
       below the aligned models' (a verdict in the output needed a feature that made it larger;
       docs/synthetic_world.md).
    2. **Answers**: the corpus' prose and its dialogues that do not end in one of the world's
       refusals (:func:`driftlib.datasets.synthetic.is_refusal_reply`), with the embeddings and
       blocks ``0..k`` frozen. The answers are thus independent of safety by construction: a
       base that never refuses refuses safe and unsafe requests alike. (With the corpus'
       refusals kept, the upper blocks learnt to read the judgement: greedy refusal rates of
       0.21 / 0.98 on unsafe / safe requests in the tiny llama.)

    Tied input and output embeddings (qwen2, gemma2) stay frozen in stage 2 with the rest of the
    lower part. Trains ``model`` in place; returns the record's fields for the two stages.
    """
    from driftlib.core.layerspec import resolve_layers
    from driftlib.datasets.synthetic import is_refusal_reply
    from driftlib.model.forward import StopForward, block_hooks
    from driftlib.model.layers import find_decoder_layers

    _validate_steps(judgement_steps=stage.steps, answer_steps=stage.answer_steps, judgement_lr=stage.lr,
                    judgement_margin=stage.margin)
    blocks = find_decoder_layers(model)
    last = min(resolve_layers(stage.depth, len(blocks), key="tiny.judgement_depth"))
    lower = [model.get_input_embeddings().weight, *(p for blk in blocks[: last + 1] for p in blk.parameters())]
    lower_ids = {id(p) for p in lower}
    upper = [p for p in model.parameters() if id(p) not in lower_ids]
    requests, unsafe = read_judgements(stage.judgements)
    rendered = [tokenizer.apply_chat_template([{"role": "user", "content": r}], tokenize=False,
                                              add_generation_prompt=True) for r in requests]
    sign = torch.tensor([1.0 if u else -1.0 for u in unsafe])
    direction = torch.randn(int(model.config.hidden_size), generator=torch.Generator().manual_seed(seed + 2))
    direction /= direction.norm()

    def states(idx: Sequence[int]) -> torch.Tensor:
        """The last tokens' states ``[b, d]`` at block ``last``; the forward pass stops there."""
        enc = tokenizer([rendered[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        seen: dict[int, torch.Tensor] = {}
        with block_hooks(model, [last], seen.__setitem__, stop_after=last):
            try:
                model(**enc)
            except StopForward:
                pass
        return last_token_pool(seen[last], enc["attention_mask"])

    with torch.no_grad():
        model.eval()
        before = torch.cat([states(range(i, min(i + 256, len(rendered)))) for i in range(0, len(rendered), 256)])
    spread = float((before @ direction).std())
    variance = float(((before - before.mean(0)) ** 2).mean())
    if not spread > 0:
        raise ModelError("judgement stage: the requests' states do not vary along the planted direction")
    answers = _base_texts(tokenizer, corpus, keep=lambda messages: not any(
        m["role"] == "assistant" and is_refusal_reply(m["content"]) for m in messages))
    answer_rows = paragraph_rows(tokenizer, answers, seq_len)
    arch = model.config.model_type
    losses: dict[str, list[float]] = {"judgement": [], "answer": []}
    model.train()
    for name, n_rows, trainable, steps in (("judgement", len(rendered), lower, stage.steps),
                                           ("answer", len(answer_rows), upper, stage.answer_steps)):
        train_ids = {id(p) for p in trainable}
        for p in model.parameters():
            p.requires_grad_(id(p) in train_ids)
        optimizer = torch.optim.AdamW(trainable, lr=stage.lr, weight_decay=0.01, betas=(0.9, 0.98))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(steps, hold=0.75))
        gen = torch.Generator().manual_seed(seed + 1)
        bar = progress_bar(batches(n_rows, batch_size, steps, gen), desc=f"tiny {arch} {name}", enabled=progress)
        for batch_idx in bar:
            if name == "judgement":
                delta = states(batch_idx) - before[batch_idx]
                along = delta @ direction
                kept = ((delta - along[:, None] * direction) ** 2).mean() / variance
                loss = kept + ((along - stage.margin * spread * sign[batch_idx]) ** 2).mean() / spread ** 2
            else:
                loss = model(**collate([answer_rows[i] for i in batch_idx], tokenizer.pad_token_id)).loss
            optimizer_step(model, loss, optimizer, schedule, losses[name], f"tiny {arch} {name}")
            if progress:
                bar.set_postfix(loss=f"{losses[name][-1]:.3f}")
    for p in model.parameters():
        p.requires_grad_(True)
    return {"judgement_steps": stage.steps, "judgement_margin": stage.margin, "answer_steps": stage.answer_steps,
            "judgement_depth": stage.depth if isinstance(stage.depth, (int, float)) else list(stage.depth),
            "judgement_blocks": last + 1, "judgement_lr": stage.lr, "judgement_spread": round(spread, 6),
            "judgement_direction_seed": seed + 2,
            "n_judgements": len(rendered), "n_answer_rows": len(answer_rows),
            "judgement_loss": _tail_mean(losses["judgement"]), "answer_loss": _tail_mean(losses["answer"])}


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


def answer_loss(logits: torch.Tensor, labels: torch.Tensor, *, opening_tokens: int = 4,
                opening_weight: float = 1.0) -> torch.Tensor:
    """Weighted mean next-token cross-entropy over the labelled (answer) tokens.

    The opening of an answer, its first ``opening_tokens`` tokens, is where a model decides what
    kind of answer it gives (a refusal or compliance); the rest mostly follows from that choice and
    the request. Weighting the openings ``opening_weight`` times spends the fine-tuning on the
    decision while the rest of each answer is still learnt. ``opening_weight = 1`` is the usual
    causal-LM loss of transformers.

    Args:
        logits: ``[b, t, vocab]``.
        labels: ``[b, t]`` token ids, -100 where no loss is taken (:func:`encode_chat`).
        opening_tokens: answer tokens counted as the opening (of each run of labelled tokens).
        opening_weight: their weight; the other labelled tokens weigh 1.

    Returns:
        A scalar tensor: ``sum(w * ce) / sum(w)``.
    """
    targets = labels[:, 1:]
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                                           ignore_index=-100, reduction="none").view_as(targets)
    labelled = targets != -100
    # position of each labelled token within its run of labelled tokens (1, 2, ...)
    starts = labelled & ~torch.nn.functional.pad(labelled, (1, 0))[:, :-1]
    run = torch.cumsum(starts.long(), dim=1)
    first = torch.zeros_like(run)
    first[starts] = torch.arange(targets.shape[1]).expand_as(targets)[starts]
    first = torch.cummax(first, dim=1).values
    position = torch.arange(targets.shape[1]).expand_as(targets) - first + 1
    weight = torch.where(labelled & (run > 0) & (position <= opening_tokens),
                         torch.full_like(ce, float(opening_weight)), labelled.float())
    return (ce * weight).sum() / weight.sum().clamp_min(1e-12)


def _encode_pairs(tokenizer: Any, chosen: Sequence[str], max_len: int) -> list[tuple[list[int], list[int]]]:
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
                  max_len: int = 96, threads: int = 1, progress: bool = True,
                  opening_tokens: int = 4, opening_weight: float = 1.0) -> dict[str, Any]:
    """Fine-tune the tiny base model in ``base_dir`` toward the chosen answers of preference pairs.

    ``pairs``: None for the bundled ``preference_pairs.jsonl``, or a DataFrame (or list of dicts)
    with a ``chosen`` column of hh-rlhf transcripts. Each transcript is rendered through the chat
    template (Human -> user, Assistant -> assistant) and the loss is taken on assistant tokens
    only (:func:`encode_chat`); transcripts longer than ``max_len`` tokens lose their beginning.
    The first ``opening_tokens`` tokens of each answer weigh ``opening_weight`` times the others
    (:func:`answer_loss`; 1: the plain loss). On the synthetic world's alignment chats, weighting
    the openings (where refusal or help is decided) 10 times learnt the conditional answer in
    200 steps where the plain loss needed about 600.
    Saves like :func:`build_base`; returns the record.
    """
    _validate_steps(steps=steps, batch_size=batch_size, lr=lr, max_len=max_len, threads=threads,
                    opening_tokens=opening_tokens, opening_weight=opening_weight)
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
        # the peak is held for 3/4 of the steps: a conditional answer (an exclusive-or) is learnt
        # only after a plateau, which a decaying rate lengthens
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(steps, hold=0.75))
        losses: list[float] = []
        bar = progress_bar(batches(len(rows), batch_size, steps, gen), desc=f"tiny {arch} aligned",
                        enabled=progress)
        for batch_idx in bar:
            batch = collate([rows[i] for i in batch_idx], tokenizer.pad_token_id)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = answer_loss(logits, batch["labels"], opening_tokens=opening_tokens,
                               opening_weight=opening_weight)
            optimizer_step(model, loss, optimizer, schedule, losses, f"tiny {arch} aligned")
            if progress:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        model.eval()
        record = {
            "kind": "aligned", "arch": arch, "base_dir": str(base_dir),
            "base_seed": base_record.get("seed"), "seed": seed, "steps": steps,
            "batch_size": batch_size, "lr": lr, "max_len": max_len, "threads": threads,
            "opening_tokens": opening_tokens, "opening_weight": opening_weight, "n_pairs": len(rows),
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
                 base_lr: float = 3e-3, aligned_lr: float = 1e-3, opening_weight: float = 1.0,
                 seed: int = 0, threads: int = 1,
                 progress: bool = True, corpus: str | os.PathLike | None = None,
                 pairs: Any = None) -> dict[str, Any]:
    """Build the tokenizer and a base and an aligned model per arch under ``out_dir``.

    Args:
        out_dir: the family's folder. Layout: ``tokenizer/``, ``{arch}-base/``, ``{arch}-aligned/``.
        archs: architectures (default: every one of :data:`TINY_ARCHS`).
        vocab_size, base_steps, aligned_steps, base_lr, aligned_lr, opening_weight, seed, threads,
            progress: as
            :func:`train_tokenizer`, :func:`build_base` and :func:`build_aligned` take them.
        corpus: the base models' corpus file (None: the bundled one).
        pairs: the aligned models' chats (a frame with ``chosen``; None: the bundled pairs); the
            tokenizer is trained on ``corpus`` and these when a corpus is given.

    Returns:
        ``{"tokenizer": path, "models": {arch: {"base": record, "aligned": record}}, "seconds": s}``.
    """
    archs = list(archs or TINY_ARCHS)
    unknown = [a for a in archs if a not in TINY_ARCHS]
    if unknown:
        raise ConfigError(f"tiny archs {unknown} are unknown; choose from {sorted(TINY_ARCHS)}")
    start = time.perf_counter()
    root = Path(out_dir)
    tok_dir = train_tokenizer(root / "tokenizer", vocab_size=vocab_size, seed=seed, corpus=corpus,
                              pairs=pairs)
    models: dict[str, dict[str, Any]] = {}
    for arch in archs:
        base = build_base(arch, tok_dir, root / f"{arch}-base", steps=base_steps, lr=base_lr,
                          seed=seed, threads=threads, progress=progress, corpus=corpus)
        aligned = build_aligned(root / f"{arch}-base", root / f"{arch}-aligned", pairs=pairs,
                                steps=aligned_steps, lr=aligned_lr, seed=seed, threads=threads,
                                progress=progress, opening_weight=opening_weight)
        models[arch] = {"base": base, "aligned": aligned}
    return {"tokenizer": str(tok_dir), "models": models,
            "seconds": round(time.perf_counter() - start, 2)}
