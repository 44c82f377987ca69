"""Native tests (`python -m pytest`): the filter's logic without Wasm."""

import pytest

from kinesthetic_filter import InitError, run

from app import grep, init


def kept(params, *lines):
    return [o.bytes.decode() for o in run(grep, lines, params, init=init)]


def test_keeps_matches_and_inverts():
    assert kept({"pattern": "sshd\\["}, "sshd[1]: ok", "cron: x") == ["sshd[1]: ok"]
    assert kept({"pattern": "sshd", "invert": "true"}, "sshd[1]: ok", "cron: x") == ["cron: x"]


def test_a_missing_or_bad_pattern_stops_init():
    with pytest.raises(InitError, match="pattern"):
        kept({}, "x")
    with pytest.raises(InitError, match="pattern '\\('"):
        kept({"pattern": "("}, "x")
