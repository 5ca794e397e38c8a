"""Render evaluation prompts as the model would see them in a chat: one user turn plus the
generation prompt.

Torch-free (only the tokenizer object is used; nothing is imported from torch or transformers).
The read-out that sees most is the last token of the prompt rendered through the chat template,
where the model decides how to answer (2.5-3x larger effects than a mean over the raw prompt in
this project's measurements). A base model and its aligned variant must read the *same string*,
or a difference between them is partly a difference of inputs: base models often ship without a
chat template, or with another one. So the template comes from one tokenizer, ``template_tokenizer``
(normally the aligned variant's), for both variants::

    aligned_text = render_prompt(aligned_tok, text)
    base_text = render_prompt(base_tok, text, template_tokenizer=aligned_tok)   # == aligned_text

Where no tokenizer involved has a chat template, :data:`PLAIN_TEMPLATE` is used.

The rendered string may begin with the template's own BOS token (many templates write
``bos_token``): tokenise it with ``add_special_tokens=False`` where it does, so that no second BOS
is added (the tiny family's template writes none, and its tokenizer adds one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from driftlib.core.errors import ConfigError, DataError, ModelError

__all__ = ["PLAIN_TEMPLATE", "RENDERINGS", "adds_bos", "format_prompts", "has_chat_template", "render_prompt", "render_prompts"]

#: How evaluation prompts are read (config ``extraction.render``): ``raw`` text as written, or
#: ``chat``, one user turn plus the generation prompt (:func:`render_prompt`).
RENDERINGS: tuple[str, ...] = ("raw", "chat")

#: The template for tokenizers without a chat template: ``PLAIN_TEMPLATE.format(text=text)``, one user
#: turn and an open assistant turn (the generation prompt is ``"\nAssistant:"``), in the style of
#: plain-text dialogue corpora; no special tokens (the tokenizer adds its BOS when tokenising).
PLAIN_TEMPLATE = "User: {text}\nAssistant:"


def has_chat_template(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` carries a usable chat template (a non-empty ``chat_template``)."""
    template = getattr(tokenizer, "chat_template", None)
    return bool(template) and callable(getattr(tokenizer, "apply_chat_template", None))


def render_prompt(tokenizer: Any, text: str, *, template_tokenizer: Any = None) -> str:
    """One prompt as a single user turn with the generation prompt appended.

    Args:
        tokenizer: The tokenizer of the model that will read the string.
        text: The prompt text.
        template_tokenizer: The tokenizer whose chat template renders the prompt, normally the
            aligned variant's, so that a base and an aligned model read the same string; default
            ``tokenizer`` itself. The rendering (special-token strings included) is the template
            tokenizer's ``apply_chat_template([{"role": "user", "content": text}], tokenize=False,
            add_generation_prompt=True)``.

    Returns:
        The rendered string. Without a chat template on the template tokenizer:
        ``PLAIN_TEMPLATE.format(text=text)``.

    Raises:
        DataError: ``text`` is not a string.
        ModelError: the chat template failed to render (the message names the tokenizer).
    """
    if not isinstance(text, str):
        raise DataError(f"a prompt must be a string; got {type(text).__name__}")
    source = tokenizer if template_tokenizer is None else template_tokenizer
    if not has_chat_template(source):
        return PLAIN_TEMPLATE.format(text=text)
    try:
        rendered = source.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                              add_generation_prompt=True)
    except Exception as exc:  # jinja2 errors, templates that raise on purpose
        name = getattr(source, "name_or_path", "") or type(source).__name__
        raise ModelError(f"the chat template of tokenizer {name!r} failed to render a user turn: {exc}") from exc
    if not isinstance(rendered, str):
        raise ModelError(f"apply_chat_template returned {type(rendered).__name__}, not a string")
    return rendered


def render_prompts(tokenizer: Any, texts: Sequence[str], *, template_tokenizer: Any = None) -> list[str]:
    """:func:`render_prompt` for each of ``texts`` (a list of strings, not one string)."""
    if isinstance(texts, str):
        raise DataError("render_prompts takes a list of prompts, not one string")
    return [render_prompt(tokenizer, t, template_tokenizer=template_tokenizer) for t in texts]


def adds_bos(tokenizer: Any) -> str | None:
    """The BOS token string ``tokenizer`` puts in front of every encoding by itself, else None."""
    bos, bos_id = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "bos_token_id", None)
    if not bos or bos_id is None:
        return None
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return bos if ids and ids[0] == bos_id else None


def format_prompts(tokenizer: Any, texts: Sequence[str], render: str = "chat", *,
                   template_tokenizer: Any = None) -> list[str]:
    """The strings a model reads for ``texts`` under a read-out ``render`` (:data:`RENDERINGS`).

    Args:
        tokenizer: The tokenizer of the model that will read the strings (it tokenises them with
            its special tokens, as :func:`driftlib.model.forward.extract_hidden_states` does).
        texts: ``n`` prompt texts.
        render: ``raw`` (the texts unchanged) or ``chat`` (:func:`render_prompts` through
            ``template_tokenizer``'s chat template, default ``tokenizer``'s).
        template_tokenizer: The tokenizer whose template renders the prompts (the model key's aligned
            variant's, so base and aligned read the same string).

    Returns:
        ``n`` strings. A rendering that begins with the BOS token string loses it when ``tokenizer``
        adds its BOS itself, so the tokenised prompt has one BOS, not two.

    Raises:
        ConfigError: an unknown ``render``.
    """
    if render not in RENDERINGS:
        raise ConfigError(f"extraction.render: {render!r}; use one of {', '.join(RENDERINGS)}")
    if isinstance(texts, str):
        raise DataError("format_prompts takes a list of prompts, not one string")
    if render == "raw":
        return list(texts)
    rendered = render_prompts(tokenizer, texts, template_tokenizer=template_tokenizer)
    bos = adds_bos(tokenizer)
    return [r[len(bos):] if bos and r.startswith(bos) else r for r in rendered]
