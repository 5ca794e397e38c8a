"""Phase 4.5 model code: dealign an aligned model with a LoRA trained on rejected responses.

Each aligned model is deliberately pushed away from its alignment by a low-rank adapter (peft LoRA)
fine-tuned on the REJECTED side of preference pairs, with the loss on the final assistant answer
only (in hh-rlhf the chosen and rejected transcripts share every earlier turn; only that answer
differs). One training run saves an adapter at each configured step count, so the workflow gets
several dealignment strengths from one job. :func:`load_dealigned` merges an adapter into a fresh
load of the aligned model and returns a plain transformers model, so driftlib's hooks (activations,
steering, sweeps) apply to it unchanged.

Layout of one :func:`train_dealign_lora` output folder::

    steps{N}/            # one per step count: peft's own format (PeftModel.from_pretrained loads it)
        adapter_config.json  adapter_model.safetensors  README.md
    loss.parquet         # the training loss curve: columns step (1..max), loss
    record.json          # settings, data counts, losses, versions, seconds

Choices (see the function docstrings): a constant learning rate (AdamW, no decay), so the adapter
saved at step N is the same whatever larger step counts the run goes on to (``steps: [20]`` and
``steps: [20, 60]`` give the same ``steps20``); gradients clipped at norm 1; batches drawn in
seeded epochs; the LoRA's random initialisation seeded; deterministic on CPU for a fixed thread
count.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from driftlib import __version__
from driftlib.core.errors import ArtifactError, ConfigError, DataError, ModelError
from driftlib.datasets.pairs import parse_transcript

logger = logging.getLogger(__name__)

#: the rule whose output :func:`load_dealigned` reads (named in its errors)
PRODUCER = "train_dealign"
#: label value that the loss ignores
IGNORE = -100
#: the files a saved adapter folder must hold; weights only as safetensors (peft's older
#: adapter_model.bin is a pickle, which driftlib never reads)
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors",)
#: target modules to suggest where peft has no default (Phi-3 fuses q/k/v into one projection)
SUGGESTED_TARGET_MODULES: dict[str, list[str]] = {"phi3": ["qkv_proj"]}

#: the last hh-rlhf assistant marker: "Assistant:" at the start of the text or after a blank line
_ASSISTANT = re.compile(r"(?:\A|\n\n)Assistant:")


# --------------------------------------------------------------------------------------------
# encoding


def encode_final_turn(tokenizer: Any, transcript: str, *,
                      max_len: int = 256) -> tuple[list[int], list[int]]:
    """Token ids of an hh-rlhf transcript and labels on its final assistant answer only.

    With a chat template: the transcript is split into messages
    (:func:`driftlib.datasets.pairs.parse_transcript`) and rendered by the tokenizer's template. The
    final answer starts where the rendering of the earlier messages with
    ``add_generation_prompt=True`` ends (this works for any template whose generation prompt is a
    prefix of the full rendering; otherwise the answer's last occurrence in the text is used), and
    runs to the end of the rendering, so the labels cover the answer's content and the template's
    end-of-turn token(s) after it (``<|end|>`` for the tiny family, ``<|im_end|>\\n`` for ChatML,
    ``<end_of_turn>\\n`` for Gemma, ``</s>`` for Mistral, ...). A token is labelled when its
    characters overlap that span.

    Without a chat template (a base model's tokenizer): the raw transcript is encoded and the
    labels cover the text after its last ``Assistant:`` marker, plus an appended EOS token (the
    end-of-turn of plain text), when the tokenizer has one.

    The rendered text is tokenised with the tokenizer's special tokens (BOS) unless the template
    already writes the BOS token itself. Over ``max_len`` tokens the sequence is truncated from the
    LEFT (the end is where chosen and rejected differ), keeping a leading BOS token first.

    Returns:
        ``(ids, labels)``, two lists of equal length ``<= max_len``; ``labels[k]`` is ``ids[k]``
        on the final answer's tokens and ``-100`` elsewhere.

    Raises:
        ConfigError: ``max_len < 2``.
        DataError: a transcript without turns, whose last turn is not the assistant's, or that the
            chat template refuses.
    """
    if not isinstance(max_len, int) or max_len < 2:
        raise ConfigError(f"dealign.max_length must be an integer >= 2, got {max_len!r}")
    if getattr(tokenizer, "chat_template", None):
        messages = parse_transcript(transcript)
        if messages[-1]["role"] != "assistant":
            raise DataError(f"transcript does not end with an assistant turn: {transcript[-80:]!r}")
        text, begin = _render_final_turn(tokenizer, messages)
        ids, labels = _label_span(tokenizer, text, begin, eos=False)
    else:
        markers = list(_ASSISTANT.finditer(transcript))
        if not markers:
            raise DataError(f"transcript has no 'Assistant:' turn: {transcript[:80]!r}")
        ids, labels = _label_span(tokenizer, transcript, markers[-1].end(), eos=True)
    if len(ids) > max_len:
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is not None and ids[0] == bos:
            ids = ids[:1] + ids[len(ids) - max_len + 1:]
            labels = [IGNORE] + labels[len(labels) - max_len + 1:]
        else:
            ids, labels = ids[-max_len:], labels[-max_len:]
    return ids, labels


def _render_final_turn(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, int]:
    """The chat rendering of ``messages`` and the character where the final answer starts."""
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False,
                                               add_generation_prompt=True)
    except Exception as exc:  # jinja2 raises TemplateError (and templates raise_exception)
        raise DataError(f"the chat template refuses this transcript ({type(exc).__name__}: "
                        f"{exc}); first turn: {messages[0]['content'][:60]!r}") from exc
    if not isinstance(text, str) or not isinstance(prompt, str):
        raise DataError("the chat template did not render text")
    if text.startswith(prompt):
        return text, len(prompt)
    content = messages[-1]["content"]
    begin = text.rfind(content) if content else -1
    if begin < 0:
        raise DataError("cannot find the final assistant answer in the chat template's rendering "
                        "(its generation prompt is not a prefix of the full rendering, and the "
                        f"answer's text does not appear in it): {content[:60]!r}")
    return text, begin


def _label_span(tokenizer: Any, text: str, begin: int, *,
                eos: bool) -> tuple[list[int], list[int]]:
    """Encode ``text``; label the tokens that overlap ``text[begin:]`` (and an appended EOS)."""
    bos_token = getattr(tokenizer, "bos_token", None)
    special = not (bos_token and text.startswith(bos_token))
    offsets = None
    if getattr(tokenizer, "is_fast", False):
        try:
            enc = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True,
                            verbose=False)
            ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
        except (NotImplementedError, ValueError, KeyError):
            offsets = None
    if offsets is not None:
        labels = [tid if b > a and b > begin else IGNORE for tid, (a, b) in zip(ids, offsets)]
    else:
        # no character offsets (a python tokenizer): the answer's tokens are those after the
        # longest common token prefix of the text and the text before the answer
        ids = list(tokenizer(text, add_special_tokens=special)["input_ids"])
        head = list(tokenizer(text[:begin], add_special_tokens=special)["input_ids"])
        n = 0
        while n < min(len(ids), len(head)) and ids[n] == head[n]:
            n += 1
        labels = [IGNORE] * n + ids[n:]
    eos_id = getattr(tokenizer, "eos_token_id", None)
    if eos and eos_id is not None:
        ids.append(eos_id)
        labels.append(eos_id)
    return ids, labels


def _encode_rejected(tokenizer: Any, rejected: Sequence[str],
                     max_len: int) -> tuple[list[tuple[list[int], list[int]]], int]:
    """Encode every transcript; drop those with no labelled token left. Returns (rows, dropped)."""
    rows, dropped = [], 0
    for i, transcript in enumerate(rejected):
        if not isinstance(transcript, str) or not transcript.strip():
            raise DataError(f"rejected text {i} is empty or not a string")
        try:
            ids, labels = encode_final_turn(tokenizer, transcript, max_len=max_len)
        except DataError as exc:
            raise DataError(f"rejected text {i}: {exc}") from exc
        if any(label != IGNORE for label in labels):
            rows.append((ids, labels))
        else:
            dropped += 1
    if not rows:
        raise DataError(f"none of the {len(rejected)} rejected texts has a final answer token "
                        f"left after encoding (max_length {max_len})")
    return rows, dropped


# --------------------------------------------------------------------------------------------
# training


def _check_steps(steps: Sequence[int]) -> list[int]:
    if isinstance(steps, (int, str)) or not isinstance(steps, Sequence):
        raise ConfigError(f"dealign.steps must be a list of positive integers, got {steps!r}")
    values = list(steps)
    if not values:
        raise ConfigError("dealign.steps is empty; give at least one positive step count")
    bad = [s for s in values if isinstance(s, bool) or not isinstance(s, int) or s < 1]
    if bad:
        raise ConfigError(f"dealign.steps must be positive integers; got {bad} in {values}")
    if len(set(values)) != len(values):
        dupes = sorted({s for s in values if values.count(s) > 1})
        raise ConfigError(f"dealign.steps has duplicates {dupes} in {values}; each strength once")
    return sorted(values)


def _check_settings(*, rank: int, alpha: float, dropout: float, lr: float, batch_size: int,
                    max_len: int) -> None:
    for key, value in (("rank", rank), ("batch_size", batch_size), ("max_length", max_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"dealign.{key} must be a positive integer, got {value!r}")
    if max_len < 2:
        raise ConfigError(f"dealign.max_length must be >= 2, got {max_len}")
    for key, value in (("alpha", alpha), ("lr", lr)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"dealign.{key} must be a positive number, got {value!r}")
    if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise ConfigError(f"dealign.dropout must be in [0, 1), got {dropout!r}")


def resolve_target_modules(model_type: str,
                           target_modules: Sequence[str] | None) -> list[str] | str:
    """The modules the LoRA adapts: ``target_modules`` as given, else peft's default for the family.

    Returns a sorted list of module names (or peft's regex string for the few families whose default
    is one). Defaults in peft 0.21: ``q_proj, v_proj`` for llama, mistral, qwen2 and gemma2.

    Raises:
        ConfigError: an empty or non-string ``target_modules``, or ``None`` for a family peft has
            no default for (e.g. ``phi3``, whose attention projection is the fused ``qkv_proj``).
    """
    if target_modules is not None:
        if isinstance(target_modules, str):
            target_modules = [target_modules]
        names = list(target_modules)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"dealign.target_modules must be a non-empty list of module names, "
                              f"got {target_modules!r}")
        return sorted(dict.fromkeys(names))
    from peft.utils import (
        TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS,
    )

    default = DEFAULTS.get(model_type)
    if default is None:
        hint = SUGGESTED_TARGET_MODULES.get(model_type)
        example = f", e.g. {hint}" if hint else " (names of its nn.Linear modules, e.g. q_proj)"
        raise ConfigError(f"peft has no default LoRA target modules for model type "
                          f"'{model_type}'; set dealign.target_modules{example}")
    return default if isinstance(default, str) else sorted(default)


def _wrap_lora(model: Any, *, modules: list[str] | str, rank: int, alpha: float,
               dropout: float) -> Any:
    """``peft.get_peft_model`` with a causal-LM LoRA; an unknown module name is a ConfigError."""
    import peft

    config = peft.LoraConfig(task_type=peft.TaskType.CAUSAL_LM, r=rank, lora_alpha=alpha,
                             lora_dropout=dropout, target_modules=modules, bias="none")
    try:
        return peft.get_peft_model(model, config)
    except ValueError as exc:
        raise ConfigError(f"dealign.target_modules {modules} do not fit "
                          f"{type(model).__name__} ({exc})") from exc


@torch.no_grad()
def _mean_loss(model: Any, rows: Sequence[tuple[list[int], list[int]]], batch_size: int,
               pad_id: int) -> float:
    """Mean cross-entropy (nats/token) of ``model`` on the labelled tokens of ``rows``."""
    from driftlib.model.training import collate

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        batch = collate(rows[i: i + batch_size], pad_id)
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device), use_cache=False).logits
        labels = batch["labels"][:, 1:].to(device)
        total += float(torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE,
            reduction="sum"))
        count += int((labels != IGNORE).sum())
    model.train(was_training)
    return total / count


def _versions() -> dict[str, str]:
    import peft
    import transformers

    return {"driftlib_version": __version__, "peft_version": peft.__version__,
            "torch_version": torch.__version__, "transformers_version": transformers.__version__}


def sort_adapter_config(path: Path) -> None:
    """Rewrite peft's ``adapter_config.json`` with ``target_modules`` sorted and keys in order: peft
    keeps the modules as a set, whose order changes from one process to the next, so two runs of
    the same training would write different files."""
    config = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def train_dealign_lora(model_dir: str, rejected: Sequence[str], out_dir: str, *,
                       steps: Sequence[int] = (20, 60), rank: int = 8, alpha: int = 16,
                       dropout: float = 0.0, lr: float = 1e-3, batch_size: int = 8,
                       max_len: int = 256, target_modules: Sequence[str] | None = None,
                       seed: int = 0, dtype: str = "auto", device: str = "auto",
                       revision: str | None = None, trust_remote_code: bool = False,
                       progress: bool = True) -> dict[str, Any]:
    """Train a dealigning LoRA on rejected transcripts; save an adapter at each step count.

    Loads the aligned model (:func:`driftlib.model.loading.load_model`), wraps it with a peft LoRA
    (``rank``, ``alpha``, ``dropout``; ``target_modules`` None = peft's default for the model type,
    see :func:`resolve_target_modules`) and trains the adapter alone for ``max(steps)`` AdamW
    steps (constant ``lr``, no weight decay, gradients clipped at norm 1) on batches of
    ``batch_size`` encoded transcripts (:func:`encode_final_turn`: loss on the final assistant
    answer only), drawn in seeded epochs. After step N, for each N in ``steps``, the adapter is
    saved with peft's ``save_pretrained`` into ``out_dir/steps{N}/``.

    Also writes ``out_dir/loss.parquet`` (columns ``step``, ``loss``: the training batch loss per
    step) and ``out_dir/record.json`` (returned). Everything is written into a temporary folder
    beside ``out_dir`` that replaces ``out_dir`` at the end, so a killed run leaves no partial
    output.

    Returns:
        the record: settings (model_dir, revision, steps, rank, alpha, dropout, lr, batch_size,
        max_len, target_modules as resolved, seed, dtype, device), ``n_texts`` (transcripts
        trained on), ``n_dropped``, ``n_label_tokens``, ``n_trainable_params``, ``losses``
        (training batch loss at each saved step, keyed by the step as a string),
        ``rejected_loss`` (mean loss over all training transcripts before training, key ``"0"``,
        and at each saved step), ``data_fingerprint``, the driftlib/peft/torch/transformers
        versions and ``seconds``.

    Raises:
        ConfigError: bad ``steps`` (empty, not positive, duplicates) or other settings; no
            default target modules for the family, or target modules the model lacks.
        DataError: no usable rejected transcript.
        ModelError: the model cannot be loaded.
        NumericsError: a non-finite loss.
    """
    import pandas as pd

    from driftlib.core.artifacts import atomic_dir, write_json, write_table
    from driftlib.model.loading import load_model
    from driftlib.model.training import (
        batches,
        collate,
        deterministic_torch,
        optimizer_step,
        progress_bar,
    )

    save_at = _check_steps(steps)
    _check_settings(rank=rank, alpha=alpha, dropout=dropout, lr=lr, batch_size=batch_size,
                    max_len=max_len)
    if isinstance(rejected, str) or not len(rejected):
        raise DataError("dealign: no rejected texts given (need a list of hh-rlhf transcripts)")
    start = time.perf_counter()
    model, tokenizer = load_model(model_dir, revision=revision, dtype=dtype, device=device,
                                  trust_remote_code=trust_remote_code)
    model_type = str(getattr(model.config, "model_type", ""))
    modules = resolve_target_modules(model_type, target_modules)
    rows, dropped = _encode_rejected(tokenizer, rejected, max_len)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    dev = next(model.parameters()).device
    total = save_at[-1]
    name = Path(model_dir).name or str(model_dir)
    losses: list[float] = []
    rejected_loss: dict[str, float] = {}
    out = Path(out_dir)
    with deterministic_torch(seed, torch.get_num_threads()), atomic_dir(out) as tmp:
        peft_model = _wrap_lora(model, modules=modules, rank=rank, alpha=alpha, dropout=dropout)
        rejected_loss["0"] = _mean_loss(peft_model, rows, batch_size, pad_id)
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)
        gen = torch.Generator().manual_seed(seed)
        peft_model.train()
        bar = progress_bar(batches(len(rows), batch_size, total, gen), desc=f"dealign {name}",
                        enabled=progress)
        for step, batch_idx in enumerate(bar, start=1):
            batch = {k: v.to(dev) for k, v in
                     collate([rows[i] for i in batch_idx], pad_id).items()}
            loss = peft_model(**batch, use_cache=False).loss
            optimizer_step(peft_model, loss, optimizer, schedule, losses, f"dealign {name}")
            if progress:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if step in save_at:
                peft_model.save_pretrained(str(tmp / f"steps{step}"))
                sort_adapter_config(tmp / f"steps{step}" / ADAPTER_CONFIG)
                rejected_loss[str(step)] = _mean_loss(peft_model, rows, batch_size, pad_id)
        peft_model.eval()
        record = {
            "model_dir": str(model_dir), "revision": revision, "model_type": model_type,
            "steps": save_at, "rank": rank, "alpha": alpha, "dropout": dropout, "lr": lr,
            "batch_size": batch_size, "max_len": max_len,
            "target_modules": modules if isinstance(modules, str) else list(modules),
            "seed": seed, "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "device": str(dev), "optimizer": "AdamW, constant lr, no weight decay, clip 1.0",
            "n_texts": len(rows), "n_texts_given": len(rejected), "n_dropped": dropped,
            "n_label_tokens": sum(sum(lab != IGNORE for lab in labels) for _, labels in rows),
            "n_trainable_params": sum(p.numel() for p in params),
            "losses": {str(s): losses[s - 1] for s in save_at},
            "rejected_loss": rejected_loss,
            "data_fingerprint": hashlib.sha256(
                json.dumps(rows, separators=(",", ":")).encode()).hexdigest()[:16],
            **_versions(),
        }
        write_table(pd.DataFrame({"step": list(range(1, total + 1)), "loss": losses}),
                    tmp / "loss.parquet", metadata={"model_dir": str(model_dir), "seed": seed})
        record["seconds"] = round(time.perf_counter() - start, 2)
        write_json(record, tmp / "record.json")
    logger.info("dealign %s: loss on the rejected answers %.3f -> %.3f after %d steps "
                "(%d texts, LoRA r=%d on %s), %.1fs -> %s", name, rejected_loss["0"],
                rejected_loss[str(total)], total, len(rows), rank, modules, record["seconds"], out)
    return record


# --------------------------------------------------------------------------------------------
# loading


def _adapter_error(path: Path, what: str) -> ArtifactError:
    return ArtifactError(f"{path}: {what}. Re-run the rule `{PRODUCER}` to (re)write the "
                         "dealignment adapters.")


def load_dealigned(model_dir: str, adapter_dir: str, *, dtype: str = "auto",
                   device: str = "auto", revision: str | None = None,
                   trust_remote_code: bool = False) -> tuple[Any, Any]:
    """The aligned model in ``model_dir`` with the LoRA in ``adapter_dir`` merged into its weights.

    Loads the model (:func:`driftlib.model.loading.load_model`), applies the adapter with
    ``peft.PeftModel.from_pretrained`` and merges it (``merge_and_unload``): the result is a plain
    transformers model in eval mode, whose hooks and layers are those of the aligned model.

    Returns:
        ``(model, tokenizer)`` as :func:`driftlib.model.loading.load_model` returns them.

    Raises:
        ArtifactError: ``adapter_dir`` is missing, lacks ``adapter_config.json`` or the adapter
            weights, is unreadable, or does not fit the model (the message names the folder and
            the rule to re-run, ``train_dealign``).
        ModelError: the model cannot be loaded.
    """
    import peft
    from safetensors import safe_open

    from driftlib.model.loading import load_model

    path = Path(adapter_dir)
    if not path.is_dir():
        raise _adapter_error(path, "no such adapter folder")
    if not (path / ADAPTER_CONFIG).is_file():
        raise _adapter_error(path, f"not a peft adapter folder (no {ADAPTER_CONFIG})")
    weights = next((path / w for w in ADAPTER_WEIGHTS if (path / w).is_file()), None)
    if weights is None:
        pickled = " (adapter_model.bin is a pickle and is not read)" if (path / "adapter_model.bin").exists() else ""
        raise _adapter_error(path, f"no adapter weights ({' or '.join(ADAPTER_WEIGHTS)}){pickled}")
    try:
        config = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _adapter_error(path, f"{ADAPTER_CONFIG} is not readable JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise _adapter_error(path, f"{ADAPTER_CONFIG} does not describe a LoRA adapter")
    saved_keys: set[str] | None = None
    if weights.suffix == ".safetensors":
        try:
            with safe_open(str(weights), framework="pt") as f:
                saved_keys = set(f.keys())
        except Exception as exc:  # safetensors raises several types for damaged files
            raise _adapter_error(path, f"{weights.name} is not a readable safetensors file "
                                       f"({exc})") from exc

    model, tokenizer = load_model(model_dir, revision=revision, dtype=dtype, device=device,
                                  trust_remote_code=trust_remote_code)
    try:
        wrapped = peft.PeftModel.from_pretrained(model, str(path))
    except (ModelError, ArtifactError):
        raise
    except Exception as exc:  # ValueError (modules not found), RuntimeError (shape mismatch), ...
        detail = " ".join(str(exc).split())[:300]
        raise _adapter_error(path, f"the adapter does not load onto {model_dir} "
                                   f"({type(exc).__name__}: {detail})") from exc
    if saved_keys is not None:
        expected = {re.sub(r"\.default(?=\.)", "", k, count=1)
                    for k, _ in wrapped.named_parameters() if "lora_" in k}
        if not expected or expected != saved_keys:
            missing = sorted(expected - saved_keys)[:3]
            extra = sorted(saved_keys - expected)[:3]
            raise _adapter_error(path, f"the adapter's weights do not match {model_dir} "
                                       f"(missing {missing}, unexpected {extra})")
    merged = wrapped.merge_and_unload()
    merged.eval()
    return merged, tokenizer
