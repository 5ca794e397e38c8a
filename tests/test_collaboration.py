"""Phase 5's protocol: how an agent sees the transcript, determinism under a seed, steering during
generation, the transcript table and its Parquet round trip."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from driftlib.core.artifacts import decode_metadata_value, read_table, write_table
from driftlib.core.errors import ConfigError, DataError
from driftlib.datasets.tasks import load_tasks, sample_tasks
from driftlib.model import tiny
from driftlib.phases.collaboration.protocol import (
    CONTINUE,
    Agent,
    brief,
    render_ids,
    run_collaboration,
    run_solo,
    truncate_left,
    turn_messages,
    view_messages,
)
from driftlib.phases.collaboration.transcripts import TRANSCRIPT_COLUMNS, turns_of
from driftlib.steer.spec import SteeringSpec

PROTOCOL = {"rounds": 2, "max_new_tokens": 5, "context_tokens": 200, "progress": False}


def _model(arch: str, tok, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return tiny.new_model(arch, tok).eval()


@pytest.fixture(scope="module")
def models(tok):
    return {"llama": _model("llama", tok, 0), "qwen2": _model("qwen2", tok, 1)}


@pytest.fixture(scope="module")
def tasks() -> pd.DataFrame:
    df, _ = load_tasks("bundled")
    return sample_tasks(df, 3, 0)


def _agents(models, tok, **lams) -> list[Agent]:
    out = []
    for name, model in models.items():
        lam = lams.get(name, 0.0)
        steering = None
        if lam:
            rng = np.random.default_rng(5)
            vectors = {1: (8.0 * rng.standard_normal(model.config.hidden_size)).astype(np.float32)}
            steering = SteeringSpec(layers=(1,), lam=lam, vectors=vectors)
        out.append(Agent(name, model, tok, steering))
    return out


# ---------------------------------------------------------------------------------------------
# what an agent sees


def test_view_alternates_roles_for_two_agents():
    turns = [("a", "one"), ("b", "two"), ("a", "three"), ("b", "four")]
    assert view_messages("T", turns, "a", ["a", "b"]) == [
        {"role": "user", "content": brief("T", "a", ["a", "b"])},
        {"role": "assistant", "content": "one"},
        {"role": "user", "content": "b: two"},
        {"role": "assistant", "content": "three"},
        {"role": "user", "content": "b: four"},
    ]
    # b's view: a's first turn joins the brief (two user messages in a row become one)
    view_b = view_messages("T", turns, "b", ["a", "b"])
    assert view_b[0] == {"role": "user", "content": brief("T", "b", ["a", "b"]) + "\n\na: one"}
    assert [m["role"] for m in view_b] == ["user", "assistant", "user", "assistant"]


def test_view_merges_others_and_separates_own_turns():
    turns = [("b", "x"), ("c", "y"), ("a", "z")]
    view = view_messages("T", turns, "a", ["a", "b", "c"])
    assert view[0]["content"].endswith("\n\nb: x\n\nc: y")
    assert view[1] == {"role": "assistant", "content": "z"}
    assert turn_messages("T", [("b", "x")], "a", ["a", "b"]) == view_messages("T", [("b", "x")], "a", ["a", "b"])
    assert turn_messages("T", [("a", "p")], "a", ["a"])[-1] == {"role": "user", "content": CONTINUE}
    solo = view_messages("T", [("a", "p"), ("a", "q")], "a", ["a"])
    assert solo[1:] == [{"role": "assistant", "content": "p"}, {"role": "user", "content": CONTINUE},
                        {"role": "assistant", "content": "q"}]
    assert "alone" in solo[0]["content"] and "working with" in brief("T", "a", ["a", "b"])


def test_render_uses_the_chat_template_and_a_fallback(tok):
    msgs = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    ids = render_ids(tok, msgs, generation_prompt=True)
    assert tok.decode(ids) == "<|user|>hello<|end|><|assistant|>hi<|end|><|assistant|>"
    plain = copy.deepcopy(tok)
    plain.chat_template = None
    assert plain.decode(render_ids(plain, msgs, generation_prompt=False)) == "<|user|>hello<|end|><|assistant|>hi<|end|>"


def test_truncate_left_keeps_a_leading_bos():
    assert truncate_left([1, 2, 3, 4, 5], 3, bos=1) == [1, 4, 5]
    assert truncate_left([7, 2, 3, 4, 5], 3, bos=1) == [3, 4, 5]
    assert truncate_left([1, 2], 3, bos=1) == [1, 2]
    assert truncate_left([1, 2, 3], 2, bos=None) == [2, 3]


# ---------------------------------------------------------------------------------------------
# the protocol


def test_transcripts_have_the_documented_shape(models, tok, tasks):
    df = run_collaboration(_agents(models, tok), tasks, seeds=[0, 1], solo=True, **PROTOCOL)
    assert list(df.columns) == list(TRANSCRIPT_COLUMNS)
    n_turns = PROTOCOL["rounds"] * 2
    # one collaboration and one solo run per agent, per seed and task
    assert len(df) == 3 * 2 * len(tasks) * n_turns
    collab = df[df["run"] == "collab"]
    assert set(collab["agent"]) == {""}
    for (_, _), g in collab.groupby(["task", "seed"]):
        assert list(g.sort_values("turn")["speaker"]) == ["llama", "qwen2"] * PROTOCOL["rounds"]
        assert list(g.sort_values("turn")["round"]) == [1, 1, 2, 2]
    solo = df[df["run"] == "solo"]
    assert (solo["speaker"] == solo["agent"]).all() and set(solo["agent"]) == {"llama", "qwen2"}
    assert (solo["round"] == solo["turn"] + 1).all()
    assert (df["new_tokens"] <= PROTOCOL["max_new_tokens"]).all()
    assert (df["prompt_tokens"] <= PROTOCOL["context_tokens"] - PROTOCOL["max_new_tokens"]).all()
    # the input of a later turn holds the earlier turns: it grows within a transcript
    g = collab[(collab["task"] == tasks["id"].iloc[0]) & (collab["seed"] == 0)].sort_values("turn")
    assert g["prompt_tokens"].is_monotonic_increasing


def test_same_seed_same_transcripts_and_seeds_are_independent(models, tok, tasks):
    a = run_collaboration(_agents(models, tok), tasks, seeds=[0, 1], temperature=1.0, **PROTOCOL)
    b = run_collaboration(_agents(models, tok), tasks, seeds=[0, 1], temperature=1.0, **PROTOCOL)
    pd.testing.assert_frame_equal(a, b)
    only0 = run_collaboration(_agents(models, tok), tasks, seeds=[0], temperature=1.0, **PROTOCOL)
    pd.testing.assert_frame_equal(a[a["seed"] == 0].reset_index(drop=True), only0)
    # sampling: another seed gives other text
    assert list(a[a["seed"] == 0]["text"]) != list(a[a["seed"] == 1]["text"])


def test_steering_changes_what_a_steered_agent_says(models, tok, tasks):
    greedy = dict(PROTOCOL, temperature=0.0)
    plain = run_collaboration(_agents(models, tok), tasks, **greedy)
    steered = run_collaboration(_agents(models, tok, llama=4.0), tasks, **greedy)
    first = plain["turn"] == 0  # llama's first turns: only llama's posture differs
    assert list(plain[first]["text"]) != list(steered[first]["text"])
    # lambda 0 with vectors is the unsteered agent
    zero = [Agent(a.name, a.model, a.tokenizer, a.steering and a.steering.with_lam(0.0))
            for a in _agents(models, tok, llama=4.0)]
    pd.testing.assert_frame_equal(plain, run_collaboration(zero, tasks, **greedy))


def test_a_longer_solo_run_starts_with_a_shorter_ones_turns(models, tok, tasks):
    """One solo run per agent and lambda serves pairings of every size."""
    agent = _agents(models, tok)[0]
    kw = {k: v for k, v in PROTOCOL.items() if k != "rounds"}
    short = run_solo(agent, tasks, turns=2, seeds=[0, 1], temperature=1.0, **kw)
    long = run_solo(agent, tasks, turns=5, seeds=[0, 1], temperature=1.0, **kw)
    pd.testing.assert_frame_equal(short, long[long["turn"] < 2].reset_index(drop=True))
    both = run_collaboration(_agents(models, tok), tasks, seeds=[0, 1], temperature=1.0, solo=True, **PROTOCOL)
    mine = both[(both["run"] == "solo") & (both["agent"] == agent.name)].reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, long[long["turn"] < 4].reset_index(drop=True))


def test_transcripts_round_trip_through_parquet(models, tok, tasks, tmp_path):
    df = run_collaboration(_agents(models, tok), tasks, **PROTOCOL)
    write_table(df, tmp_path / "t.parquet", metadata={"rounds": 2})
    back, meta = read_table(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(df, back)
    assert decode_metadata_value(meta["rounds"]) == 2
    task = tasks["id"].iloc[1]
    turns = turns_of(back, "collab", "", task, 0, max_round=1)
    assert [s for s, _ in turns] == ["llama", "qwen2"]


def test_random_order_is_seeded_and_covers_every_agent(models, tok, tasks):
    df = run_collaboration(_agents(models, tok), tasks, order="random", **dict(PROTOCOL, rounds=3))
    again = run_collaboration(_agents(models, tok), tasks, order="random", **dict(PROTOCOL, rounds=3))
    pd.testing.assert_frame_equal(df, again)
    for _, g in df.groupby(["task", "round"]):
        assert sorted(g["speaker"]) == ["llama", "qwen2"]


def test_bad_protocols_are_refused(models, tok, tasks):
    agents = _agents(models, tok)
    with pytest.raises(ConfigError, match="at least two agents"):
        run_collaboration(agents[:1], tasks, **PROTOCOL)
    with pytest.raises(ConfigError, match="names must differ"):
        run_collaboration([agents[0], agents[0]], tasks, **PROTOCOL)
    with pytest.raises(ConfigError, match="context_tokens"):
        run_collaboration(agents, tasks, **dict(PROTOCOL, context_tokens=5))
    with pytest.raises(ConfigError, match="order"):
        run_collaboration(agents, tasks, order="alphabetical", **PROTOCOL)
    with pytest.raises(DataError, match="columns id and prompt"):
        run_collaboration(agents, tasks[["id"]], **PROTOCOL)
