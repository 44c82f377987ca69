"""Kinesthetic filters in Python: one function per line.

Write a function that gets each line of a batch and answers what to do with
it, and hand it to `world`; componentize-py builds the module into a filter
component (see the README, "Writing a filter in Python"):

    from kinesthetic_filter import world

    def line(line, params):
        return b"error" in line.bytes     # True: keep it; False or None: drop

    WitWorld = world(line)

The answer for a line is one of:
- `None` or `False`: drop it;
- `True`: keep it, byte for byte;
- `bytes` or `str`: keep it, replaced by these bytes (a `str` as UTF-8);
- `Emit(bytes=..., key=..., route=...)`: keep it (replaced when `bytes` is
  given), with a new partition key and/or a route name.

`params` is what `init` returned, by default the pipeline's parameters as a
`Params` (a dict with `require`). Pass `init=` to prepare once per batch
(compile a pattern, say); raising `InitError` (or `Params.require` failing)
stops the batch with its message. An exception in `line` fails the batch
with the line's number and the exception.

`run` runs the same function natively, without Wasm, for plain
`python -m pytest` tests.

Every batch runs on a fresh instance: nothing survives from one batch to
the next.
"""

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

__all__ = ["Line", "Emit", "Params", "InitError", "log", "world", "run", "Out"]


@dataclass(frozen=True)
class Line:
    """One line of a batch, with its stamp and partition key."""

    bytes: bytes
    key: str
    listener: int
    counter: int
    received_ms: int
    index: int

    @property
    def text(self) -> str:
        """The line as text (invalid UTF-8 replaced)."""
        return self.bytes.decode("utf-8", "replace")


@dataclass(frozen=True)
class Emit:
    """Keep a line with changes: new bytes, a new partition key, a route."""

    bytes: Optional[bytes] = None
    key: Optional[str] = None
    route: Optional[str] = None


class InitError(Exception):
    """Raised by `init` (or `Params.require`): the batch stops with its message."""


class Params(dict):
    """The pipeline's parameters for this filter."""

    def require(self, name: str) -> str:
        if name not in self:
            raise InitError(f"parameter `{name}` is required")
        return self[name]


# Log levels, as the host names them.
TRACE, DEBUG, INFO, WARN, ERROR = range(5)
_native_log: List[Tuple[int, str]] = []


def log(level: int, message: str) -> None:
    """Logs through the host (natively: kept in `run`'s log)."""
    try:
        import wit_world
        from wit_world.imports import types
    except ImportError:
        _native_log.append((level, message))
        return
    wit_world.log(types.Level(level), message)


@dataclass(frozen=True)
class Out:
    """One output line of `run`: its bytes, partition key and route."""

    bytes: bytes
    key: str
    route: Optional[str]


def _answers(line_fn, state, lines: List[Line]):
    """(index, bytes or None, key or None, route or None) per kept line."""
    kept = []
    for ln in lines:
        try:
            a = line_fn(ln, state)
        except Exception as e:  # the batch fails, naming the line
            raise RuntimeError(
                f"line {ln.index + 1} of the batch: {type(e).__name__}: {e}"
            ) from e
        if a is None or a is False:
            continue
        if a is True:
            kept.append((ln.index, None, None, None))
        elif isinstance(a, (bytes, bytearray)):
            kept.append((ln.index, bytes(a), None, None))
        elif isinstance(a, str):
            kept.append((ln.index, a.encode("utf-8"), None, None))
        elif isinstance(a, Emit):
            b = a.bytes.encode("utf-8") if isinstance(a.bytes, str) else a.bytes
            kept.append((ln.index, b, a.key, a.route))
        else:
            raise RuntimeError(
                f"line {ln.index + 1} of the batch: the answer {a!r} is none of "
                "None, False, True, bytes, str or Emit"
            )
    return kept


def _init(init, params) -> object:
    p = Params(params)
    return init(p) if init is not None else p


def world(line_fn: Callable, init: Optional[Callable] = None):
    """The `WitWorld` class componentize-py exports, running `line_fn` on
    every line of a batch (after `init` once per batch)."""

    state = {}

    class WitWorld:
        def init(self, params):
            from componentize_py_types import Err

            try:
                state["s"] = _init(init, params)
            except Exception as e:
                raise Err(str(e)) from e

        def filter(self, batch):
            from componentize_py_types import Err
            from wit_world.imports import types

            data, ends = batch.lines.data, batch.lines.ends
            kdata, kends = batch.keys.data, batch.keys.ends
            lines = []
            start = kstart = 0
            for i, end in enumerate(ends):
                kend = kends[i]
                lines.append(
                    Line(
                        bytes=data[start:end],
                        key=kdata[kstart:kend].decode("utf-8", "replace"),
                        listener=batch.listeners[i],
                        counter=batch.counters[i],
                        received_ms=batch.received_ms[i],
                        index=i,
                    )
                )
                start, kstart = end, kend
            try:
                kept = _answers(line_fn, state.get("s", Params()), lines)
            except Exception as e:
                raise Err(str(e)) from e

            def patches(pos):
                idx, buf, out_ends = [], bytearray(), []
                for k in kept:
                    if k[pos] is not None:
                        v = k[pos] if pos == 1 else k[pos].encode("utf-8")
                        idx.append(k[0])
                        buf += v
                        out_ends.append(len(buf))
                return types.Patches(idx, types.Packed(bytes(buf), out_ends))

            return types.Output([k[0] for k in kept], patches(1), patches(2), patches(3))

    return WitWorld


def run(
    line_fn: Callable,
    lines,
    params: Optional[dict] = None,
    init: Optional[Callable] = None,
    keys=None,
) -> List[Out]:
    """Runs `line_fn` natively over `lines` (bytes or str) as one batch, as
    the component would: returns the output lines. `init` errors and line
    errors raise, as they would fail the batch."""
    state = _init(init, list((params or {}).items()))
    batch = []
    for i, raw in enumerate(lines):
        b = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
        key = keys[i] if keys else "k"
        batch.append(Line(bytes=b, key=key, listener=1, counter=i + 1, received_ms=0, index=i))
    out = []
    for index, b, key, route in _answers(line_fn, state, batch):
        src = batch[index]
        out.append(Out(bytes=b if b is not None else src.bytes, key=key or src.key, route=route))
    return out
