"""`grep` in Python: keeps the lines that match the regular expression in
the parameter `pattern` (Python's `re`, on the line's text); with
`invert=true`, the lines that do not."""

import re

from kinesthetic_filter import InitError, world


def init(params):
    pattern = params.require("pattern")
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise InitError(f"pattern {pattern!r}: {e}") from e
    return regex, params.get("invert", "false") == "true"


def grep(line, state):
    regex, invert = state
    return (regex.search(line.text) is not None) != invert


WitWorld = world(grep, init=init)
