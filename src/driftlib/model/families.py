"""The model families driftlib knows, as plain tables (no torch): where each family keeps its decoder
blocks, and the tiny family's architectures. Importing this module loads no model library, so the
config check can use it."""

from __future__ import annotations

from typing import Any

#: Attribute paths tried, in order, to find the decoder blocks.
LAYER_PATHS: tuple[str, ...] = (
    "model.layers",  # Llama, Mistral, Qwen2, Phi-3, Gemma-2 (…ForCausalLM)
    "transformer.h",  # GPT-2, Falcon
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT and other encoder-decoder-style naming
    "layers",  # a bare base model (LlamaModel, …)
)

#: head size of the tiny family's attention heads
TINY_HEAD_DIM = 16

#: the five tiny architectures. Hidden sizes all differ (48..112, head_dim 16) and so do depths,
#: so cross-architecture maps in the default run must really map between different spaces.
#: ``config_class`` names the transformers config class; every other key is passed to it.
TINY_ARCHS: dict[str, dict[str, Any]] = {
    "llama": {
        "config_class": "LlamaConfig",
        "hidden_size": 48, "num_hidden_layers": 6, "num_attention_heads": 3,
        "num_key_value_heads": 3, "head_dim": TINY_HEAD_DIM, "intermediate_size": 128,
        "tie_word_embeddings": False,
    },
    "mistral": {
        "config_class": "MistralConfig",
        "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": TINY_HEAD_DIM, "intermediate_size": 160,
        "sliding_window": None, "tie_word_embeddings": False,
    },
    "qwen2": {
        "config_class": "Qwen2Config",
        "hidden_size": 80, "num_hidden_layers": 5, "num_attention_heads": 5,
        "num_key_value_heads": 1, "intermediate_size": 160,
        "use_sliding_window": False, "tie_word_embeddings": True,
    },
    "phi3": {
        # Phi-3 derives head_dim from hidden_size / num_attention_heads (96 / 6 = 16)
        "config_class": "Phi3Config",
        "hidden_size": 96, "num_hidden_layers": 3, "num_attention_heads": 6,
        "num_key_value_heads": 6, "intermediate_size": 192,
        "original_max_position_embeddings": 512, "tie_word_embeddings": False,
    },
    "gemma2": {
        # eager attention (softcapping); sliding_window below max_position_embeddings so the
        # alternating sliding/full layers stay meaningful; query scale 1/sqrt(head_dim)
        "config_class": "Gemma2Config",
        "hidden_size": 112, "num_hidden_layers": 4, "num_attention_heads": 7,
        "num_key_value_heads": 7, "head_dim": TINY_HEAD_DIM, "intermediate_size": 192,
        "query_pre_attn_scalar": TINY_HEAD_DIM, "sliding_window": 128,
        "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
        "tie_word_embeddings": True,
    },
}
