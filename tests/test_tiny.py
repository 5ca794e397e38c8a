"""Tests of the tiny model family builder (driftlib.model.tiny): tokenizer, five archs, alignment step."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from driftlib.core.errors import ConfigError, DataError
from driftlib.model import tiny
from driftlib.model.families import TINY_ARCHS

ARCHS = list(TINY_ARCHS)
#: few, small steps: enough for the loss to fall, quick enough for the whole file to stay short
FAST = {"steps": 12, "batch_size": 8, "seq_len": 32}


@pytest.fixture(scope="module")
def bases(tok_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("bases")
    out = {}
    for arch in ARCHS:
        record = tiny.build_base(arch, tok_dir, root / arch, progress=False, **FAST)
        out[arch] = (root / arch, record)
    return out


@pytest.fixture(scope="module")
def split_pairs() -> tuple[pd.DataFrame, pd.DataFrame]:
    pairs = pd.DataFrame(tiny.bundled_pairs())
    return pairs.iloc[:48].reset_index(drop=True), pairs.iloc[48:96].reset_index(drop=True)


@pytest.fixture(scope="module")
def aligned(bases, split_pairs, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("aligned") / "llama-aligned"
    record = tiny.build_aligned(bases["llama"][0], out, pairs=split_pairs[0], steps=15,
                                batch_size=8, progress=False)
    return out, record


# ---------------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("text", [
    "The river behind the old mill runs slow in late summer.",
    "  two leading spaces,\ttabs\nand new lines\n\n",
    "Unicode: café, naïve, 東京, emoji 🙂 — dashes",
    "",
])
def test_tokenizer_round_trip_and_bos_first(tok, text: str) -> None:
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert ids.count(tok.bos_token_id) == 1
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode(ids[1:]) == text


def test_tokenizer_special_tokens_are_single_ids(tok) -> None:
    assert len(tok) == 2048
    ids = [tok.convert_tokens_to_ids(t) for t in tiny.SPECIAL_TOKENS]
    assert ids == list(range(len(tiny.SPECIAL_TOKENS)))
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<|pad|>", "<|bos|>", "<|eos|>")
    for token, token_id in zip(tiny.SPECIAL_TOKENS, ids):
        assert tok(token, add_special_tokens=False)["input_ids"] == [token_id]
    enc = tok("<|user|>hello<|end|>", add_special_tokens=False)["input_ids"]
    assert enc[0] == ids[3] and enc[-1] == ids[6] and len(enc) >= 3
    assert tok.model_max_length == 512


def test_chat_template_renders_roles_and_generation_prompt(tok) -> None:
    messages = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == "<|system|>Be kind.<|end|><|user|>Hi<|end|><|assistant|>Hello!<|end|>"
    prompt = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|system|>Be kind.<|end|><|user|>Hi<|end|><|assistant|>"
    ids = tok(prompt)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.convert_tokens_to_ids("<|assistant|>")
    with pytest.raises(Exception, match="unknown role"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_tokenizer_pads_left(tok) -> None:
    batch = tok(["short", "a much longer piece of text than the first"], padding=True)
    first, mask = batch["input_ids"][0], batch["attention_mask"][0]
    n_pad = mask.count(0)
    assert n_pad > 0 and mask == [0] * n_pad + [1] * (len(mask) - n_pad)
    assert first[:n_pad] == [tok.pad_token_id] * n_pad and first[n_pad] == tok.bos_token_id


def test_tokenizer_is_deterministic(tok_dir: Path, tmp_path: Path) -> None:
    again = tiny.train_tokenizer(tmp_path / "again")
    assert (again / "tokenizer.json").read_bytes() == (tok_dir / "tokenizer.json").read_bytes()
    # a rebuild replaces the folder whole and leaves no temporary folder beside it
    (again / "stale.txt").write_text("from an older build")
    tiny.train_tokenizer(tmp_path / "again", seed=1)
    assert [p.name for p in tmp_path.iterdir()] == ["again"]
    assert not (again / "stale.txt").exists()
    assert (again / "tokenizer.json").read_bytes() == (tok_dir / "tokenizer.json").read_bytes()


# ------------------------------------------------------------------------------ transcripts


def test_parse_transcript_maps_hh_roles() -> None:
    text = ("\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour."
            "\n\nHuman: Then?\n\nAssistant: Knead.")
    assert tiny.parse_transcript(text) == [
        {"role": "user", "content": "How do I bake bread?"},
        {"role": "assistant", "content": "Mix flour."},
        {"role": "user", "content": "Then?"},
        {"role": "assistant", "content": "Knead."},
    ]
    with pytest.raises(DataError):
        tiny.parse_transcript("\n\nHuman: only a question")


def test_parse_dialogue_only_accepts_dialogues() -> None:
    assert tiny.parse_dialogue("User: Hi?\nAssistant: Hello.\nmore") == [
        {"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello.\nmore"}]
    assert tiny.parse_dialogue("Plain prose. User: not at the start.") is None


def test_encode_chat_labels_only_assistant_tokens(tok) -> None:
    messages = tiny.parse_transcript(
        "\n\nHuman: What is rain?\n\nAssistant: Water falling from clouds.")
    ids, labels = tiny.encode_chat(tok, messages)
    assert ids[0] == tok.bos_token_id and len(ids) == len(labels)
    learned = [i for i, lab in zip(ids, labels) if lab != -100]
    assert tok.decode(learned) == "Water falling from clouds.<|end|>"
    # left truncation keeps BOS first and the end of the transcript
    long = [{"role": "user", "content": "word " * 200}, messages[1]]
    ids_t, labels_t = tiny.encode_chat(tok, long, max_len=24)
    assert len(ids_t) == 24 and ids_t[0] == tok.bos_token_id
    assert tok.decode([i for i, lab in zip(ids_t, labels_t) if lab != -100]).endswith("<|end|>")


# ------------------------------------------------------------------------------------ archs


def test_archs_differ_in_hidden_size_and_config_is_valid(tok) -> None:
    hidden = [spec["hidden_size"] for spec in TINY_ARCHS.values()]
    assert set(TINY_ARCHS) == {"llama", "mistral", "qwen2", "phi3", "gemma2"}
    assert len(set(hidden)) == len(hidden)
    assert len({spec["num_hidden_layers"] for spec in TINY_ARCHS.values()}) > 1
    gemma = tiny.tiny_config("gemma2", tok)
    assert gemma.sliding_window < gemma.max_position_embeddings == 512
    assert gemma.attn_logit_softcapping and gemma.final_logit_softcapping
    with pytest.raises(ConfigError, match="falcon"):
        tiny.tiny_config("falcon", tok)


@pytest.mark.parametrize("arch", ARCHS)
def test_base_builds_learns_and_reloads(arch: str, bases, tok_dir: Path) -> None:
    path, record = bases[arch]
    spec = TINY_ARCHS[arch]
    model, info = AutoModelForCausalLM.from_pretrained(str(path), output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert model.config.model_type == arch
    assert model.config.hidden_size == spec["hidden_size"] == record["hidden_size"]
    assert len(model.model.layers) == spec["num_hidden_layers"] == record["num_hidden_layers"]
    assert record["n_params"] == sum(p.numel() for p in model.parameters())
    if arch == "gemma2":
        assert model.config._attn_implementation == "eager"
    # the loss fell during training
    curve = record["loss_curve"]
    assert len(curve) == FAST["steps"]
    assert sum(curve[-3:]) / 3 < sum(curve[:3]) / 3 - 0.3
    saved = json.loads((path / tiny.RECORD_NAME).read_text())
    assert saved["loss_curve"] == curve and saved["arch"] == arch
    # what was saved is the trained model: two loads agree exactly, and both beat a fresh init
    tok = AutoTokenizer.from_pretrained(str(path))
    text = tiny.corpus_paragraphs()[0]
    batch = tok(text, return_tensors="pt", truncation=True, max_length=64)
    with torch.no_grad():
        torch.manual_seed(1)
        out = model(**batch, labels=batch["input_ids"])
        torch.manual_seed(2)
        again = AutoModelForCausalLM.from_pretrained(str(path))(**batch).logits
        fresh = tiny.new_model(arch, tok).eval()(**batch, labels=batch["input_ids"]).loss
    assert torch.equal(out.logits, again)
    assert float(out.loss) < float(fresh) - 0.2


@pytest.mark.parametrize("arch", ARCHS)
def test_generate_with_kv_cache_matches_without(arch: str, bases) -> None:
    path, _ = bases[arch]
    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    tok = AutoTokenizer.from_pretrained(str(path))
    prompts = [[{"role": "user", "content": "How do birds know when to migrate?"}],
               [{"role": "user", "content": "Hi"}]]
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
             for m in prompts]
    batch = tok(texts, return_tensors="pt", padding=True)
    assert batch["attention_mask"][1, 0] == 0  # left padded
    outs = {}
    for use_cache in (True, False):
        outs[use_cache] = model.generate(
            **batch, max_new_tokens=5, min_new_tokens=5, do_sample=False, use_cache=use_cache,
            output_scores=True, return_dict_in_generate=True)
    width = batch["input_ids"].shape[1]
    assert outs[True].sequences.shape == (2, width + 5)
    assert torch.equal(outs[True].sequences, outs[False].sequences)
    for with_cache, without in zip(outs[True].scores, outs[False].scores):
        assert torch.allclose(with_cache, without, atol=1e-4)


# ---------------------------------------------------------------------------------- aligned


def test_aligned_changes_weights_and_lowers_chosen_loss(aligned, bases, split_pairs) -> None:
    path, record = aligned
    base_path = bases["llama"][0]
    base_w = load_file(str(base_path / "model.safetensors"))
    new_w = load_file(str(path / "model.safetensors"))
    assert base_w.keys() == new_w.keys()
    changed = [k for k in base_w if not torch.equal(base_w[k], new_w[k])]
    assert len(changed) == len(base_w)
    assert record["kind"] == "aligned" and record["base_dir"] == str(base_path)
    assert record["n_pairs"] == 48 and len(record["loss_curve"]) == 15
    train, held_out = split_pairs
    assert tiny.chosen_loss(path, train) < tiny.chosen_loss(base_path, train) - 0.1
    assert tiny.chosen_loss(path, held_out) < tiny.chosen_loss(base_path, held_out)
    loaded = AutoModelForCausalLM.from_pretrained(str(path))
    assert loaded.config.hidden_size == TINY_ARCHS["llama"]["hidden_size"]


def test_aligned_rejects_pairs_without_chosen(bases, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="chosen"):
        tiny.build_aligned(bases["llama"][0], tmp_path / "x",
                           pairs=pd.DataFrame({"prompt": ["a"]}), steps=1, progress=False)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------ determinism


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_same_seed_same_weights_other_seed_differs(tok_dir: Path, bases, tmp_path: Path) -> None:
    arch = "mistral"
    first = _weights(bases[arch][0])
    tiny.build_base(arch, tok_dir, tmp_path / "again", progress=False, **FAST)
    tiny.build_base(arch, tok_dir, tmp_path / "seed1", seed=1, progress=False, **FAST)
    again, other = _weights(tmp_path / "again"), _weights(tmp_path / "seed1")
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == \
        (bases[arch][0] / "model.safetensors").read_bytes()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
    # the build record is byte-identical too: the wall-clock time is kept beside it, in timing.json
    assert (tmp_path / "again" / tiny.RECORD_NAME).read_bytes() == (bases[arch][0] / tiny.RECORD_NAME).read_bytes()
    assert "seconds" not in tiny.read_record(tmp_path / "again")
    timing = json.loads((tmp_path / "again" / tiny.TIMING_NAME).read_text())
    assert set(timing) == {"seconds"} and timing["seconds"] >= 0


def test_aligned_is_deterministic(aligned, bases, split_pairs, tmp_path: Path) -> None:
    path, _ = aligned
    tiny.build_aligned(bases["llama"][0], tmp_path / "again", pairs=split_pairs[0], steps=15,
                       batch_size=8, progress=False)
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == \
        (path / "model.safetensors").read_bytes()
    assert (tmp_path / "again" / tiny.RECORD_NAME).read_bytes() == (path / tiny.RECORD_NAME).read_bytes()
    assert (tmp_path / "again" / tiny.TIMING_NAME).is_file()


def test_build_family_layout(tmp_path: Path) -> None:
    fam = tiny.build_family(tmp_path / "fam", archs=["llama"], base_steps=2, aligned_steps=1,
                            progress=False)
    assert sorted(p.name for p in (tmp_path / "fam").iterdir()) == \
        ["llama-aligned", "llama-base", "tokenizer"]
    assert fam["models"]["llama"]["aligned"]["base_dir"] == str(tmp_path / "fam" / "llama-base")
    assert math.isfinite(fam["models"]["llama"]["base"]["final_loss"])
    with pytest.raises(ConfigError):
        tiny.build_family(tmp_path / "bad", archs=["gpt2"])


# ------------------------------------------------------------------------ training rows


def test_paragraph_rows_start_every_text_with_bos_and_cut_long_ones(tok) -> None:
    short, long = "Sure.", " ".join(["word"] * 40)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in (short, long)]
    rows = tiny.paragraph_rows(tok, [short, long], seq_len=16)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    # by hand: the short text is one row; the long one (len + EOS tokens) is cut into 15-token pieces
    stream = [*ids[1], eos]
    pieces = [stream[i:i + 15] for i in range(0, len(stream), 15)]
    assert [r[0] for r in rows] == [[bos, *ids[0], eos]] + [[bos, *p] for p in pieces]
    assert all(labels == [-100, *row[1:]] for row, labels in rows)
    assert all(len(row) <= 16 for row, _ in rows)


def test_answer_loss_weights_the_first_tokens_of_each_answer() -> None:
    torch.manual_seed(0)
    labels = torch.tensor([[-100, -100, 5, 6, 7, 8, 9, -100, 3, 4],
                           [-100, 1, 2, -100, -100, -100, -100, -100, -100, -100]])
    logits = torch.randn(2, 10, 12)
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 12), labels[:, 1:].reshape(-1),
                                           ignore_index=-100, reduction="none").view(2, 9)
    # by hand: targets are labels shifted by one; the first 2 tokens of each answer weigh 10
    weight = torch.zeros(2, 9)
    weight[0, [1, 2, 7, 8]] = 10
    weight[0, [3, 4, 5]] = 1
    weight[1, [0, 1]] = 10
    got = tiny.answer_loss(logits, labels, opening_tokens=2, opening_weight=10)
    assert torch.allclose(got, (ce * weight).sum() / weight.sum())
    # weight 1 is the usual causal-LM loss of transformers
    plain = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 12), labels[:, 1:].reshape(-1),
                                              ignore_index=-100)
    assert torch.allclose(tiny.answer_loss(logits, labels, opening_weight=1.0), plain)


# ---------------------------------------------------------------------------------- judgement stage


def test_judgement_stage_trains_the_lower_blocks_then_only_the_upper_ones(tmp_path: Path, monkeypatch) -> None:
    """The judgement stage changes only the embeddings and blocks 0..2 (depth 0.5 of the tiny llama's
    6); the answer stage only the blocks above, the final norm and the output layer; each stage
    changes some of its own."""
    from driftlib.datasets.synthetic import WorldSpec, make_world, write_world

    spec = WorldSpec(pretrain_per_group=2, prose_paragraphs=2, align_per_group=2, evaluation_per_group=2,
                     calibration_per_group=2, pairs_per_axiom=1, dealign_per_axiom=1, task_twins_per_axiom=1,
                     anchors=10, neutral=1, knowledge_dialogues=0)
    paths = write_world(make_world(spec), tmp_path / "world")
    tok_dir = tiny.train_tokenizer(tmp_path / "tok", vocab_size=400, corpus=paths["corpus"])
    tiny.build_base("llama", tok_dir, tmp_path / "base", steps=2, batch_size=4, seq_len=64, progress=False)
    model, tok = tiny.load_tiny(tmp_path / "base")
    changed: list[tuple[str, set[str]]] = []
    step = tiny.optimizer_step

    def watched(model_, loss, optimizer, schedule, losses, what):
        before = {n: p.detach().clone() for n, p in model_.named_parameters()}
        step(model_, loss, optimizer, schedule, losses, what)
        changed.append((what.split()[-1], {n for n, p in model_.named_parameters() if not torch.equal(p, before[n])}))

    monkeypatch.setattr(tiny, "optimizer_step", watched)
    record = tiny.judgement_stages(model, tok, tiny.JudgementStage(paths["judgements"], steps=3, answer_steps=3),
                                   corpus=paths["corpus"], batch_size=4, seq_len=64, seed=0, progress=False)
    names = {n for n, _ in model.named_parameters()}
    lower = {n for n in names if n == "model.embed_tokens.weight" or n.startswith(("model.layers.0.",
                                                                                   "model.layers.1.",
                                                                                   "model.layers.2."))}
    assert [w for w, _ in changed] == ["judgement"] * 3 + ["answer"] * 3
    judged = set().union(*(c for w, c in changed if w == "judgement"))
    answered = set().union(*(c for w, c in changed if w == "answer"))
    assert judged and judged <= lower and any(n.startswith("model.layers.2.") for n in judged)
    assert answered and not answered & lower and "lm_head.weight" in answered
    assert record["judgement_blocks"] == 3 and record["n_judgements"] == 4 * 7 * 2
    assert all(p.requires_grad for p in model.parameters())  # left trainable for whoever goes on
