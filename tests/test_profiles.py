"""Pairing and profile names in result paths: round trips and refusals."""

from __future__ import annotations

import pytest

from driftlib.core.errors import ConfigError
from driftlib.core.profiles import (
    pairing_name,
    parse_pairing,
    parse_profile,
    profile_name,
    profile_operator,
)


def test_profile_names_round_trip_in_shortest_form():
    assert profile_name([0, 1.0]) == "0x1"
    assert profile_name([0.5, -0.25, -0.0]) == "0.5x-0.25x0"
    assert profile_name([1e-5]) == "1e-05"
    for lams in ([0.0, 1.0], [0.5, -0.25, 2.0], [1e-05, 3.0]):
        assert parse_profile(profile_name(lams), len(lams)) == lams
    assert parse_profile("0.0x1.0") == [0.0, 1.0]


def test_a_compared_operator_rides_on_the_profile_name():
    assert profile_name([1, 1], "ablate") == "1x1@ablate" and profile_name([1, 1]) == "1x1"
    assert parse_profile("1x0.5@conditional", 2) == [1.0, 0.5]
    assert profile_operator("1x0.5@conditional") == "conditional" and profile_operator("1x1") is None


def test_pairing_names_round_trip_in_turn_order():
    assert pairing_name(["qwen2", "llama"]) == "qwen2+llama"
    assert parse_pairing("llama+qwen2+phi3") == ["llama", "qwen2", "phi3"]


@pytest.mark.parametrize("call, pattern", [
    (lambda: pairing_name(["llama"]), "at least two agents"),
    (lambda: pairing_name(["llama", "llama"]), "names an agent twice"),
    (lambda: pairing_name(["a/b", "c"]), "cannot be used"),
    (lambda: profile_name([]), "one lambda per agent"),
    (lambda: profile_name([float("nan")]), "finite number"),
    (lambda: profile_name([True]), "finite number"),
    (lambda: parse_profile("0xlarge"), "expected lambdas"),
    (lambda: parse_profile("0x1", 3), "2 lambda\\(s\\) for 3 agents"),
    (lambda: profile_name([1], "Ablate/x"), "operator's name"),
])
def test_bad_names_are_refused(call, pattern):
    with pytest.raises(ConfigError, match=pattern):
        call()
