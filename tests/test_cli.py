"""The command line: user errors are one line with exit status 2; commands do what they say."""

from __future__ import annotations

import numpy as np
import pytest

from driftlib.cli import main
from driftlib.steer.gguf import import_control_vector
from driftlib.steer.vectors import save_vectors


def test_user_error_is_one_line_without_traceback(tmp_path, capsys):
    code = main(["score", "--activations", str(tmp_path / "missing.safetensors"),
                 "--prompts", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "o.parquet")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("driftlib: error: ") and "Traceback" not in err
    assert "missing.parquet: file not found" in err and "prepare_prompts" in err


def test_check_config(repo_root, capsys, tmp_path):
    assert main(["check-config", str(repo_root / "config/paper.yaml")]) == 0
    assert "valid (5 models, 9 variants)" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text((repo_root / "config/config.yaml").read_text().replace("bootstrap: 1000", "bootstrap: lots"))
    assert main(["check-config", str(bad)]) == 2
    assert "aqi.bootstrap" in capsys.readouterr().err


def test_export_gguf_writes_the_steering_kind(tmp_path):
    rng = np.random.default_rng(0)
    kinds = {"mean_diff_both": rng.standard_normal((3, 8)).astype(np.float32),
             "contrastive": rng.standard_normal((3, 8)).astype(np.float32)}
    save_vectors(tmp_path / "v.safetensors", kinds, [0, 1, 2],
                 metadata={"steering_kind": "mean_diff_both", "model_type": "llama"})
    assert main(["export-gguf", "--vectors", str(tmp_path / "v.safetensors"), "--scale", "2",
                 "--out", str(tmp_path / "v.gguf")]) == 0
    vectors, meta = import_control_vector(tmp_path / "v.gguf")
    assert sorted(vectors) == [1, 2]  # llama.cpp has no slot for block 0
    np.testing.assert_allclose(vectors[2], 2 * kinds["mean_diff_both"][2], rtol=1e-6)
    assert meta["model_hint"] == "llama"


@pytest.mark.parametrize("argv", [["extract", "--model", "x"], ["nonsense"]])
def test_bad_arguments_exit_with_usage(argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


@pytest.mark.parametrize("agents, words", [
    ("[{'name': 'a'}]", "not valid JSON"),
    ('[{"name": "a"}]', "at least 'name' and 'model'"),
    ("no-such-agents.json", "neither a JSON list nor a readable file"),
])
def test_bad_agent_lists_are_one_line_errors(tmp_path, capsys, agents, words):
    import pandas as pd

    from driftlib.core.artifacts import write_table

    write_table(pd.DataFrame({"id": ["t"], "prompt": ["p"]}), tmp_path / "tasks.parquet")
    code = main(["collaborate", "--agents", agents, "--tasks", str(tmp_path / "tasks.parquet"),
                 "--out", str(tmp_path / "o.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err


def test_check_config_refuses_duplicates_non_utf8_and_nan_in_one_line(repo_root, capsys, tmp_path):
    text = (repo_root / "config/config.yaml").read_text()
    cases = {
        "dup.yaml": (text + "\nseed: 3\n").encode(), "latin1.yaml": text.replace("# one seed", "# caf\u00e9").encode("latin-1"),
        "nan.yaml": text.replace("lambdas: [0, 0.5, 1]", "lambdas: [0, .nan]").encode(),
    }
    words = {"dup.yaml": "duplicate key seed at line", "latin1.yaml": "not valid UTF-8 (byte 0xe9 at line",
             "nan.yaml": "steering.lambdas[1]: nan is not a finite number"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert main(["check-config", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("driftlib: error: ") and words[name] in err and "Traceback" not in err, err
        assert err.count("\n") == 1
