"""Phase 5's protocol: agents taking turns on a shared transcript, and their solo control runs.

An :class:`Agent` is a loaded model with its tokenizer, optionally steered (``h + lambda * v`` at
its injection layers, on its own alignment vector) while it generates and while it is measured.

The protocol (:func:`run_collaboration`)
----------------------------------------
A *pairing* is two or more agents in turn order. For every task and every seed the team runs
``rounds`` rounds; in each round every agent speaks once (``order="round_robin"``: in pairing
order; ``"random"``: an order drawn per task, seed and round). Before its turn an agent sees the
shared transcript through its own chat template (:func:`view_messages`):

- one user message: the brief (:func:`brief`: who the team is, and the task as written);
- its own earlier turns as assistant messages, every other agent's turn as a user message
  ``"<name>: <text>"``; consecutive user messages are joined by a blank line and two consecutive
  assistant turns get a user ``"Continue."`` between them, so the roles alternate as strict
  templates (Gemma's) demand.

Each agent also runs every task *alone* (:func:`run_solo`, the control): the same number of turns,
all its own, with a solo brief, a user ``"Continue."`` before each of its turns after the first
(:func:`turn_messages`). Its length matches the collaboration's by construction (same turns,
same ``max_new_tokens``); the measurement then trims both contexts to the same number of tokens.
Solo turns are seeded like the collaboration's, so a longer solo run starts with a shorter one's
turns, and one solo run per agent and lambda serves every pairing.

Generation is batched across tasks: at each turn every transcript whose speaker is the same agent
is generated in one left-padded batch. Sampling uses ``temperature``/``top_p`` (``temperature=0``:
greedy). Randomness: before each turn's ``generate`` of seed ``s`` the torch generator is seeded from
``(s, turn)``, so a seed's transcripts do not depend on which other seeds run, and the same config
gives the same transcripts (on the same hardware and batch size). The rendered input is truncated
from the left to ``context_tokens`` (keeping a leading BOS).

Transcripts are a table (:data:`TRANSCRIPT_COLUMNS`): ``run`` (``"collab"`` or ``"solo"``),
``agent`` (the solo agent; ``""`` for the collaboration), ``task``, ``seed``, ``round`` (1-based; a
solo run counts each turn as a round),
``turn`` (0-based within the run), ``speaker``, ``text`` (decoded, special tokens dropped,
stripped), ``prompt_tokens`` (input length of that turn after truncation) and ``new_tokens``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from driftlib.core.errors import ConfigError, DataError
from driftlib.model.forward import input_device, left_pad, pad_token_id
from driftlib.phases.collaboration.transcripts import TRANSCRIPT_COLUMNS
from driftlib.steer.capability import eos_ids
from driftlib.steer.hooks import steer
from driftlib.steer.spec import SteeringSpec

logger = logging.getLogger(__name__)

__all__ = ["Agent", "TRANSCRIPT_COLUMNS", "ORDERS", "brief", "view_messages", "turn_messages", "render_ids",
           "truncate_left", "greedy_ids", "run_collaboration", "run_solo"]

ORDERS: tuple[str, ...] = ("round_robin", "random")

#: used for a tokenizer without a chat template (documented in docs/collaboration.md)
FALLBACK_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>' }}{%- endif -%}"
)
CONTINUE = "Continue."


@dataclass
class Agent:
    """A collaborating agent: a model, its tokenizer, and its posture.

    Args:
        name: the agent's name in transcripts.
        model: the loaded model.
        tokenizer: its tokenizer.
        steering: its posture, a bound :class:`~driftlib.steer.spec.SteeringSpec` (its own
            alignment vector at the injection layers, λ, operator and options), or None (not steered).
    """

    name: str
    model: torch.nn.Module
    tokenizer: Any
    steering: SteeringSpec | None = None

    @property
    def lam(self) -> float:
        """The posture's strength (0 when not steered)."""
        return self.steering.lam if self.steering is not None else 0.0

    @property
    def steered(self) -> bool:
        return self.steering is not None and self.steering.steered

    @contextmanager
    def posture(self) -> Iterator[None]:
        """Steer the agent (``add``: ``h + lam * v``) while the block is open, if it is steered at all."""
        with steer(self.model, self.steering) if self.steered else nullcontext():
            yield


def brief(task: str, agent: str, team: Sequence[str]) -> str:
    """The first user message an agent sees: who it works with, and the task as written."""
    others = [a for a in team if a != agent]
    if not others:
        return (f"You are {agent}, working alone on the task below over several turns. In each turn, "
                f"continue your own earlier work and keep the turn short.\n\nTask: {task}")
    return (f"You are {agent}, working with {', '.join(others)} on the task below. You take turns on a shared "
            f"transcript: build on the others' contributions and keep your turn short.\n\nTask: {task}")


def view_messages(task: str, turns: Sequence[tuple[str, str]], agent: str, team: Sequence[str]) -> list[dict]:
    """Chat messages of the transcript ``turns`` (``(speaker, text)`` in order) as ``agent`` sees it.

    Own turns are ``assistant`` messages, others' turns ``user`` messages prefixed with the speaker's
    name; roles are made to alternate (see the module docstring). Ends with whatever came last.
    """
    messages = [{"role": "user", "content": brief(task, agent, team)}]
    for speaker, text in turns:
        if speaker == agent:
            if messages[-1]["role"] == "assistant":
                messages.append({"role": "user", "content": CONTINUE})
            messages.append({"role": "assistant", "content": text})
        else:
            line = f"{speaker}: {text}"
            if messages[-1]["role"] == "user":
                messages[-1] = {"role": "user", "content": messages[-1]["content"] + "\n\n" + line}
            else:
                messages.append({"role": "user", "content": line})
    return messages


def turn_messages(task: str, turns: Sequence[tuple[str, str]], agent: str, team: Sequence[str]) -> list[dict]:
    """What ``agent`` is given to take its next turn: :func:`view_messages`, plus a user
    ``"Continue."`` where the view ends with its own turn (alone, or twice in a row in a random
    order), so that the generation prompt always follows a user message."""
    messages = view_messages(task, turns, agent, team)
    if messages[-1]["role"] == "assistant":
        messages.append({"role": "user", "content": CONTINUE})
    return messages


def _template(tokenizer: Any) -> str | None:
    return None if getattr(tokenizer, "chat_template", None) else FALLBACK_TEMPLATE


def render_ids(tokenizer: Any, messages: Sequence[Mapping[str, str]], *, generation_prompt: bool) -> list[int]:
    """Token ids of ``messages`` rendered by the tokenizer's chat template (a plain
    ``<|role|>text<|end|>`` template where it has none). The template supplies any BOS, so no
    special tokens are added on top."""
    text = tokenizer.apply_chat_template(list(messages), chat_template=_template(tokenizer), tokenize=False,
                                         add_generation_prompt=generation_prompt)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def truncate_left(ids: Sequence[int], n: int, bos: int | None) -> list[int]:
    """The last ``n`` tokens of ``ids``, keeping a leading ``bos`` (then ``n - 1`` last tokens)."""
    ids = list(ids)
    if len(ids) <= n:
        return ids
    if bos is not None and ids and ids[0] == bos and n > 1:
        return [bos] + ids[len(ids) - (n - 1):]
    return ids[len(ids) - n:]


def _bos(tokenizer: Any) -> int | None:
    value = getattr(tokenizer, "bos_token_id", None)
    return int(value) if value is not None else None


def _turn_seed(seed: int, turn: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(turn)]).generate_state(1)[0])


def _speakers(team: Sequence[str], order: str, rounds: int, seed: int, task_index: int) -> list[str]:
    """The speaker of every turn of one transcript (``rounds * len(team)`` turns)."""
    if order == "round_robin" or len(team) == 1:
        return [a for _ in range(rounds) for a in team]
    rng = np.random.default_rng([int(seed), int(task_index), 7])
    return [team[i] for _ in range(rounds) for i in rng.permutation(len(team))]


def _stop_ids(tokenizer: Any, model: torch.nn.Module) -> list[int]:
    """End-of-turn ids: the tokenizer's eos and the model's generation-config eos ids (chat models
    often end a turn with a token, such as Gemma's ``<end_of_turn>``, that only the latter lists)."""
    ids = list(eos_ids(tokenizer, model))
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in extra if isinstance(extra, (list, tuple)) else [extra]:
        if value is not None and int(value) not in ids:
            ids.append(int(value))
    return ids


def _generate(agent: Agent, inputs: list[list[int]], *, max_new_tokens: int, temperature: float, top_p: float,
              batch_size: int, seed: int) -> list[list[int]]:
    """New token ids (cut before the first end-of-sequence token) for each input, in order."""
    model, tok = agent.model, agent.tokenizer
    torch.manual_seed(seed)
    eos = _stop_ids(tok, model)
    pad = pad_token_id(tok)
    device = input_device(model)
    out: list[list[int]] = []
    was_training = model.training
    model.eval()
    try:
        with agent.posture(), torch.inference_mode():
            for start in range(0, len(inputs), batch_size):
                ids, mask = (t.to(device) for t in left_pad(inputs[start:start + batch_size], pad))
                kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "max_new_tokens": max_new_tokens,
                                          "pad_token_id": pad, "num_beams": 1}
                if temperature > 0:
                    kwargs.update(do_sample=True, temperature=float(temperature), top_p=float(top_p), top_k=0)
                else:
                    kwargs.update(do_sample=False)
                if eos:
                    kwargs["eos_token_id"] = eos
                new = model.generate(**kwargs)[:, ids.shape[1]:].tolist()
                for seq in new:
                    cut = next((i for i, t in enumerate(seq) if t in eos), len(seq))
                    out.append(seq[:cut])
    finally:
        if was_training:
            model.train()
    return out


def greedy_ids(agent: Agent, inputs: Sequence[Sequence[int]], *, max_new_tokens: int,
               batch_size: int = 8) -> list[list[int]]:
    """Greedy answers of ``agent`` (under its posture) to token-id inputs: the new ids of each input,
    in input order, cut before the first end-of-turn token (:func:`_stop_ids`).

    The inputs are batched longest first (left-padded, as the protocol's turns are) so a batch wastes
    little padding; each answer is that of its input alone (``generate`` with ``do_sample=False``
    and the KV cache; ``tests/test_collab_eval.py`` checks it against unpadded generation).

    Args:
        agent: the answering agent (steered by its posture while it generates).
        inputs: ``[n]`` lists of token ids (rendered prompts, with any context).
        max_new_tokens: the longest answer.
        batch_size: inputs per ``generate`` call.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"behaviour.max_new_tokens: {max_new_tokens!r}; use a positive integer")
    order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i]))
    new = _generate(agent, [list(inputs[i]) for i in order], max_new_tokens=max_new_tokens, temperature=0.0,
                    top_p=1.0, batch_size=batch_size, seed=0)
    out: list[list[int]] = [[] for _ in inputs]
    for i, seq in zip(order, new, strict=True):
        out[i] = seq
    return out


def _check_team(agents: Sequence[Agent]) -> None:
    names = [a.name for a in agents]
    if len(names) < 2:
        raise ConfigError(f"a collaboration needs at least two agents; got {names}")
    if len(set(names)) != len(names):
        raise ConfigError(f"agent names must differ; got {names}")


def _check_protocol(rounds: int, seeds: Sequence[int], order: str, max_new_tokens: int, temperature: float,
                    top_p: float, context_tokens: int, batch_size: int) -> None:
    for key, value in (("rounds", rounds), ("max_new_tokens", max_new_tokens), ("context_tokens", context_tokens),
                       ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"collaboration.{key}: {value!r}; use a positive integer")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"collaboration.seeds: {list(seeds)!r}; give one or more distinct seeds")
    if order not in ORDERS:
        raise ConfigError(f"collaboration.order: {order!r}; use one of {', '.join(ORDERS)}")
    if not temperature >= 0 or not 0 < top_p <= 1:
        raise ConfigError(f"collaboration.generation: temperature {temperature!r} must be >= 0 and top_p "
                          f"{top_p!r} in (0, 1]")
    if context_tokens <= max_new_tokens:
        raise ConfigError(f"collaboration.context_tokens ({context_tokens}) must exceed max_new_tokens "
                          f"({max_new_tokens})")


def _run_team(by_name: Mapping[str, Agent], team: Sequence[str], run: str, who: str, tasks: pd.DataFrame,
              speakers_of: Any, n_turns: int, per_round: int, seeds: Sequence[int], gen: dict[str, Any],
              context_tokens: int, bar: Any) -> list[dict[str, Any]]:
    """Rows of one run (the collaboration, or one agent's solo run) over every seed and task."""
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        speakers = [speakers_of(seed, i) for i in range(len(tasks))]
        turns: list[list[tuple[str, str]]] = [[] for _ in range(len(tasks))]
        for t in range(n_turns):
            for name in dict.fromkeys(s[t] for s in speakers):
                agent = by_name[name]
                idx = [i for i, s in enumerate(speakers) if s[t] == name]
                inputs = [truncate_left(render_ids(agent.tokenizer, turn_messages(
                    tasks["prompt"].iloc[i], turns[i], name, team), generation_prompt=True),
                    context_tokens - gen["max_new_tokens"], _bos(agent.tokenizer)) for i in idx]
                new = _generate(agent, inputs, seed=_turn_seed(seed, t), **gen)
                for i, ids, seq in zip(idx, inputs, new, strict=True):
                    text = agent.tokenizer.decode(seq, skip_special_tokens=True).strip()
                    turns[i].append((name, text))
                    rows.append({"run": run, "agent": who, "task": str(tasks["id"].iloc[i]), "seed": int(seed),
                                 "round": t // per_round + 1, "turn": t, "speaker": name, "text": text,
                                 "prompt_tokens": len(ids), "new_tokens": len(seq)})
            bar.update(1)
    return rows


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(TRANSCRIPT_COLUMNS))
    return df.sort_values(["run", "agent", "seed", "task", "turn"], kind="stable").reset_index(drop=True)


def _check_tasks(tasks: pd.DataFrame) -> None:
    missing = [c for c in ("id", "prompt") if c not in tasks.columns]
    if missing or tasks.empty:
        raise DataError(f"tasks: need a non-empty frame with columns id and prompt (missing: {missing})")


def run_collaboration(
    agents: Sequence[Agent],
    tasks: pd.DataFrame,
    *,
    rounds: int = 2,
    seeds: Sequence[int] = (0,),
    order: str = "round_robin",
    max_new_tokens: int = 64,
    temperature: float = 0.7,
    top_p: float = 0.95,
    context_tokens: int = 2048,
    batch_size: int = 8,
    solo: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Run the collaboration of ``agents`` on every task (and, with ``solo``, each agent's solo control).

    Args:
        agents: the team in turn order (two or more, distinct names).
        tasks: a task frame (columns ``id``, ``prompt``; see :func:`driftlib.datasets.tasks.load_tasks`).
        rounds: rounds per transcript; every agent speaks once per round.
        seeds: one transcript per task and seed.
        order: ``"round_robin"`` or ``"random"`` (see the module docstring).
        max_new_tokens, temperature, top_p: generation settings (``temperature=0``: greedy).
        context_tokens: each turn's rendered input is cut from the left to this many tokens.
        batch_size: transcripts per ``generate`` call.
        solo: also run :func:`run_solo` for each agent with ``rounds * len(agents)`` turns (the
            workflow runs those separately, once per agent and lambda, and shares them).

    Returns:
        The transcripts, one row per turn, columns :data:`TRANSCRIPT_COLUMNS`, ordered by run,
        agent, seed, task and turn.
    """
    _check_team(agents)
    _check_protocol(rounds, list(seeds), order, max_new_tokens, temperature, top_p, context_tokens, batch_size)
    _check_tasks(tasks)
    by_name = {a.name: a for a in agents}
    names = [a.name for a in agents]
    gen = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "batch_size": batch_size}
    n_turns = rounds * len(names)
    with tqdm(total=len(seeds) * n_turns, desc="collaboration turns", unit="turn", disable=not progress,
              leave=False) as bar:
        rows = _run_team(by_name, names, "collab", "", tasks,
                         lambda seed, i: _speakers(names, order, rounds, seed, i), n_turns, len(names), list(seeds),
                         gen, context_tokens, bar)
    df = _frame(rows)
    if solo:
        solos = [run_solo(a, tasks, turns=n_turns, seeds=seeds, progress=progress, context_tokens=context_tokens,
                          **gen) for a in agents]
        df = _frame(df.to_dict("records") + [r for s in solos for r in s.to_dict("records")])
    return df


def run_solo(
    agent: Agent,
    tasks: pd.DataFrame,
    *,
    turns: int,
    seeds: Sequence[int] = (0,),
    max_new_tokens: int = 64,
    temperature: float = 0.7,
    top_p: float = 0.95,
    context_tokens: int = 2048,
    batch_size: int = 8,
    progress: bool = True,
) -> pd.DataFrame:
    """One agent alone on every task for ``turns`` turns (the control of phase 5): rows with
    ``run="solo"``, ``agent`` its name, ``round = turn + 1``.

    Turn ``t`` of seed ``s`` is generated exactly as in :func:`run_collaboration` (the generator
    seeded from ``(s, t)``), so the first ``k`` turns of a longer solo run are those of a run of
    ``k`` turns: one solo run serves every pairing the agent is in.
    """
    _check_protocol(turns, list(seeds), "round_robin", max_new_tokens, temperature, top_p, context_tokens,
                    batch_size)
    _check_tasks(tasks)
    gen = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "batch_size": batch_size}
    with tqdm(total=len(seeds) * turns, desc=f"solo turns {agent.name}", unit="turn", disable=not progress,
              leave=False) as bar:
        rows = _run_team({agent.name: agent}, [agent.name], "solo", agent.name, tasks,
                         lambda seed, i: [agent.name] * turns, turns, 1, list(seeds), gen, context_tokens, bar)
    return _frame(rows)
