"""Shared helpers for tests that need a tokenizer for small random-weight models (no download)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

VOCAB = 300
#: texts of very different lengths (one and many tokens), for padding and pooling tests
SAMPLE_TEXTS = [
    "Human: How do I bake bread? Assistant: Mix flour, water, salt and yeast, then knead.",
    "Hi.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun all day long.",
    "Human: Can you help me? Assistant: Of course.",
    "Short text here",
    "A somewhat longer sentence, with commas, numbers like 12345, and punctuation!?",
    "ok",
]


def random_vectors(layers: Sequence[int], hidden: int, *, seed: int = 1, norm: float = 3.0) -> dict[int, np.ndarray]:
    """``{layer: float32 vector [hidden]}``, random directions of the given norm."""
    rng = np.random.default_rng(seed)
    out = {}
    for layer in layers:
        v = rng.standard_normal(hidden)
        out[layer] = (norm * v / np.linalg.norm(v)).astype(np.float32)
    return out


def bpe_tokenizer(texts: Sequence[str], *, bos: bool = True, vocab_size: int = VOCAB) -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE trained on ``texts``; puts ``<s>`` in front when ``bos``; no pad token (eos pads)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts) * 3, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


@contextmanager
def out_of_memory_above(model) -> Iterator[dict]:
    """Make ``model``'s first decoder block raise ``torch.OutOfMemoryError`` on a batch of more than
    ``state["limit"]`` rows (no limit until the test sets one); ``state["sizes"]`` records every
    batch size it saw. Yields ``state``."""
    import torch

    from driftlib.model.layers import find_decoder_layers

    block = find_decoder_layers(model)[0]
    original = block.forward
    state: dict = {"limit": float("inf"), "sizes": []}

    def forward(hidden, *args, **kwargs):
        state["sizes"].append(hidden.shape[0])
        if hidden.shape[0] > state["limit"]:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(hidden, *args, **kwargs)

    block.forward = forward
    try:
        yield state
    finally:
        del block.forward
