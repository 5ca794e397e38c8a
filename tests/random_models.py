"""Shared helpers for tests that need a tokenizer for small random-weight models (no download)."""

from __future__ import annotations

from collections.abc import Sequence

import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

VOCAB = 300


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
