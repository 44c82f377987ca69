"""`@NAME@`: a Kinesthetic filter in Python. Keeps the lines that contain
the parameter `needle`.

Test natively:  @PY@/python -m pytest           (PYTHONPATH=@HELPER@)
Build:          @PY@/componentize-py -d @WIT@ -w filter componentize --stub-wasi -p @HELPER@ -p . app -o @NAME@.wasm
Run:            kinesthetic filter run @NAME@.wasm --param needle=error INPUT
"""

from kinesthetic_filter import world


def init(params):
    return params.require("needle").encode()


def line(line, needle):
    return needle in line.bytes


WitWorld = world(line, init=init)
