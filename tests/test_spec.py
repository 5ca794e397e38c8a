"""The steering specification: its fields, binding to a model's layers, and that every site that
steers receives all of it (``preserve_norm`` reaches the capability cost and the agents, not only
the sweeps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from driftlib.cli import main
from driftlib.core.artifacts import read_table
from driftlib.core.errors import ConfigError
from driftlib.datasets.neutral import neutral_texts
from driftlib.model import tiny
from driftlib.steer.capability import next_token_kl
from driftlib.steer.spec import SteeringSpec, as_spec
from driftlib.steer.vectors import save_vectors

LAMBDAS = [0.0, 3.0]


def test_bind_resolves_the_injection_layers_for_the_model() -> None:
    vectors = {b: np.full(4, float(b), np.float32) for b in range(6)}
    spec = SteeringSpec(layers=(0.5, -1)).bind(vectors, depth=6)
    # 0.5 of 6 blocks is block round(3) - 1 = 2; -1 is block 5
    assert spec.blocks == [2, 5]
    assert spec.vectors[2][0] == 2.0 and spec.vectors[5][0] == 5.0
    with pytest.raises(ConfigError, match=r"no vector at injection layers \[5\]"):
        SteeringSpec(layers=(-1,)).bind({2: vectors[2]}, depth=6)


def test_options_survive_every_derivation() -> None:
    spec = SteeringSpec(layers=(1,), preserve_norm=True, start_position=3).bind({1: np.ones(4)}, depth=4)
    for derived in (spec.with_lam(2.0), spec.with_vectors({1: np.zeros(4)}), spec.with_lam(0.0)):
        assert (derived.preserve_norm, derived.start_position, derived.operator) == (True, 3, "add")
    assert spec.with_lam(2.0).lam == 2.0 and spec.with_lam(2.0).steered
    assert not spec.with_lam(0.0).steered
    assert not SteeringSpec(preserve_norm=True).additive and SteeringSpec().additive


def test_from_config_and_bad_values() -> None:
    spec = SteeringSpec.from_config({"layers": [0.5], "operator": "add", "preserve_norm": True})
    assert (spec.layers, spec.operator, spec.preserve_norm, spec.lam) == ((0.5,), "add", True, 1.0)
    with pytest.raises(ConfigError, match="not a steering operator; use one of ablate, ablate_add, add, conditional"):
        SteeringSpec(operator="multiply")
    with pytest.raises(ConfigError, match="finite"):
        SteeringSpec(lam=float("nan"))
    with pytest.raises(ConfigError, match="start_position"):
        SteeringSpec(start_position=-1)
    assert as_spec({3: np.ones(4)}, lam=2.0).blocks == [3]


# --------------------------------------------------------------------------------------------
# every site that steers gets the whole spec


@pytest.fixture(scope="module")
def steerable(tok_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random tiny llama in a model folder, a vectors file for it, and phase 5's tasks."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("steerable")
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(0)
    model = tiny.new_model("llama", tokenizer).eval()
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    depth, hidden = model.config.num_hidden_layers, model.config.hidden_size
    rng = np.random.default_rng(0)
    save_vectors(root / "vectors.safetensors", {"mean_diff_both": 6.0 * rng.standard_normal((depth, hidden))},
                 list(range(depth)), metadata={"model": "llama", "steering_kind": "mean_diff_both"})
    assert main(["-q", "prepare-tasks", "--n", "2", "--out", str(root / "tasks.parquet")]) == 0
    return {"model": root / "model", "vectors": root / "vectors.safetensors", "tasks": root / "tasks.parquet"}


def _cost(steerable: dict[str, Path], out: Path, *extra: str) -> pd.DataFrame:
    code = main(["-q", "cost", "--model", str(steerable["model"]), "--name", "llama", "--vectors",
                 str(steerable["vectors"]), "--inject", "0.5", "--lambdas", *map(str, LAMBDAS), "--n-texts", "4",
                 "--n-prompts", "2", "--max-new-tokens", "6", "--out", str(out), *extra])
    assert code == 0
    return read_table(out)[0]


def test_preserve_norm_reaches_the_capability_cost(steerable: dict[str, Path], tmp_path: Path) -> None:
    plain = _cost(steerable, tmp_path / "plain.parquet")
    kept = _cost(steerable, tmp_path / "kept.parquet", "--preserve-norm")
    own = lambda t: t[t["vector"] == "own"].set_index("lam")["kl"]  # noqa: E731
    assert own(plain)[0.0] == own(kept)[0.0] == 0.0
    assert abs(own(plain)[3.0] - own(kept)[3.0]) > 1e-4
    # the command's KL is the KL under the norm-preserving spec, computed here by hand
    from driftlib.model.loading import load_model
    from driftlib.steer.vectors import load_steering_vectors

    model, tokenizer = load_model(str(steerable["model"]), dtype="float32", device="cpu")
    vectors = load_steering_vectors(steerable["vectors"]).vectors
    spec = SteeringSpec(layers=(0.5,), preserve_norm=True).bind(vectors, model.config.num_hidden_layers)
    texts, _ = neutral_texts("bundled", 4, 2)
    want = next_token_kl(model, tokenizer, texts, spec, [3.0], progress=False)[0]
    np.testing.assert_allclose(own(kept)[3.0], want, rtol=1e-6)


def _solo(steerable: dict[str, Path], out: Path, *extra: str) -> list[str]:
    code = main(["-q", "solo", "--model", str(steerable["model"]), "--name", "llama", "--vectors",
                 str(steerable["vectors"]), "--lam", "3", "--tasks", str(steerable["tasks"]), "--inject", "0.5",
                 "--turns", "1", "--max-new-tokens", "6", "--temperature", "0", "--context-tokens", "200",
                 "--out", str(out), *extra])
    assert code == 0
    return read_table(out)[0]["text"].tolist()


def test_preserve_norm_reaches_the_agents(steerable: dict[str, Path], tmp_path: Path) -> None:
    plain = _solo(steerable, tmp_path / "plain.parquet")
    kept = _solo(steerable, tmp_path / "kept.parquet", "--preserve-norm")
    assert plain != kept
    again = _solo(steerable, tmp_path / "again.parquet", "--preserve-norm")
    assert kept == again


def test_sweep_answers_are_the_steered_greedy_answers(steerable: dict[str, Path], tmp_path: Path) -> None:
    """`driftlib sweep --answers-out`: per lambda, the greedy answers under the own vector's spec,
    rendered through the chat template; lambda 0 is the unsteered model and a large lambda changes them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from driftlib.model.render import render_prompts
    from driftlib.stats.behaviour import is_refusal
    from driftlib.steer.capability import greedy_continuations
    from driftlib.steer.vectors import load_steering_vectors

    prompts = tmp_path / "prompts.parquet"
    assert main(["-q", "prepare-prompts", "--per-group", "1", "--out", str(prompts)]) == 0
    answers = tmp_path / "answers.parquet"
    assert main(["-q", "sweep", "--model", str(steerable["model"]), "--dtype", "float32", "--device", "cpu",
                 "--name", "llama", "--vectors", str(steerable["vectors"]), "--inject", "1",
                 "--measure", "-1", "--lambdas", *map(str, LAMBDAS), "--texts", str(prompts),
                 "--out", str(tmp_path / "sweep.safetensors"), "--answers-out", str(answers),
                 "--max-new-tokens", "5"]) == 0
    got = read_table(answers)[0]
    table = read_table(prompts)[0]
    assert len(got) == len(LAMBDAS) * len(table) and set(got["operator"]) == {"add"}
    model = AutoModelForCausalLM.from_pretrained(str(steerable["model"])).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(steerable["model"]))
    spec = SteeringSpec(layers=(1,)).bind(load_steering_vectors(steerable["vectors"]).vectors, depth=model.config.num_hidden_layers)
    texts = render_prompts(tokenizer, table["text"].tolist())
    per_lam = {}
    for lam in LAMBDAS:
        ids = greedy_continuations(model, tokenizer, texts, spec, lam, max_new_tokens=5)
        want = [tokenizer.decode(i, skip_special_tokens=True).strip() for i in ids]
        rows = got[got["lam"] == lam]
        assert rows["id"].tolist() == table["id"].tolist()
        assert rows["text"].tolist() == want
        assert rows["refused"].tolist() == [is_refusal(t) for t in want]
        per_lam[lam] = want
    assert per_lam[0.0] != per_lam[3.0]


def test_for_operators_gives_one_spec_per_operator() -> None:
    from driftlib.stats.condition import Condition

    cond = Condition(layer=1, direction=np.ones(4, np.float32) / 2, threshold=0.0, pooling="last",
                     calibration_accuracy=0.9, n_calibration=10)
    spec = SteeringSpec(layers=(1,), preserve_norm=True).bind({1: np.ones(4)}, depth=4)
    specs = spec.for_operators(["conditional", "add", "ablate", "ablate"], cond)
    # the main operator (add) once, under None, ungated; the others in order, with every option kept
    assert list(specs) == [None, "conditional", "ablate"]
    assert spec.operator_keys(["conditional", "add", "ablate", "ablate"]) == [None, "conditional", "ablate"]
    assert specs[None].operator == "add" and specs[None].condition is None
    assert specs["conditional"].condition is cond and specs["ablate"].condition is None
    assert all(s.preserve_norm and s.blocks == [1] for s in specs.values())
    with pytest.raises(ConfigError, match="needs a condition"):
        spec.for_operators(["conditional"])
    # a gated main operator keeps its condition
    gated = SteeringSpec(layers=(1,), operator="conditional").for_operators([], cond)
    assert gated[None].condition is cond
