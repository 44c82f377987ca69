"""`errors-only` in Python: keeps JSON events whose top-level `level` is
"error" and whose `status` is a number >= 500, reduced to `ts`, `service`
and `msg` in that order (as the Rust `errors-only`; the same output on the
same input is checked by a test).

Numbers and nested values are written as they came (compacted); strings are
re-encoded as `json.dumps` does, which is byte-identical for the usual
escapes (a `\\u00e9` escape comes out as `é`).
"""

import json
import math

from kinesthetic_filter import world

KEPT = ("ts", "service", "msg")


class Num(str):
    """A number, as written."""


class Obj(list):
    """An object's members in order, duplicates kept."""


def _number(text):
    if not math.isfinite(float(text)):
        raise ValueError("number out of range")
    return Num(text)


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


DECODER = json.JSONDecoder(
    object_pairs_hook=Obj, parse_float=_number, parse_int=_number, parse_constant=_no_constant
)


def dump(v):
    """A value as compact JSON."""
    if isinstance(v, Obj):
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + dump(x) for k, x in v) + "}"
    if isinstance(v, list):
        return "[" + ",".join(dump(x) for x in v) + "]"
    if isinstance(v, Num):
        return str.__str__(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return {True: "true", False: "false", None: "null"}[v]


def errors_only(line, params):
    try:
        obj = DECODER.decode(line.bytes.decode("utf-8"))
    except (ValueError, RecursionError):
        return None  # not valid JSON: dropped
    if not isinstance(obj, Obj):
        return None
    level = status = False
    kept = {}
    for key, value in obj:
        if key == "level":
            if isinstance(value, Num) or value != "error":
                return None
            level = True
        elif key == "status":
            if not (isinstance(value, Num) and float(value) >= 500):
                return None
            status = True
        elif key in KEPT:
            kept[key] = value
    if not (level and status):
        return None
    return "{" + ",".join(f'"{k}":{dump(kept[k])}' for k in KEPT if k in kept) + "}"


WitWorld = world(errors_only)
