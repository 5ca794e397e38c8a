"""driftlib reads only safetensors, Parquet, JSON and peft adapters: no pickle anywhere."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "driftlib"


def test_no_pickle_and_no_unsafe_torch_load():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            code = line.split("#", 1)[0]
            if re.search(r"\bimport pickle\b|\bpickle\.|\bdill\b|\bjoblib\b|allow_pickle\s*=\s*True|np\.load\(", code):
                offenders.append(f"{path.name}:{lineno}: {line.strip()}")
            if "torch.load(" in code and "weights_only=True" not in code:
                offenders.append(f"{path.name}:{lineno}: {line.strip()}")
    assert not offenders, "unsafe deserialisation:\n" + "\n".join(offenders)
    assert len(list(SRC.rglob("*.py"))) > 20  # the scan saw the package
