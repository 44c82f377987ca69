"""Native tests of `@NAME@` (`python -m pytest`): no Wasm involved."""

import pytest

from kinesthetic_filter import InitError, run

from app import init, line


def test_keeps_lines_with_the_needle():
    out = run(line, [b"an error", b"all fine", b"error!"], {"needle": "error"}, init=init)
    assert [o.bytes for o in out] == [b"an error", b"error!"]


def test_the_needle_is_required():
    with pytest.raises(InitError, match="needle"):
        run(line, [b"x"], {}, init=init)
