"""Does the C accelerator earn its keep? Each encoding's C path next to the best
standard-library path, side by side.

For every text encoding the extension implements (or once implemented: pass
``--module`` to measure another build), this prints the time per call of
encode and decode at a few payload sizes for

* ``C``: the extension's function (``hivemind_bus_client.protocol._speedups``),
* ``stdlib``: the standard library's function when it has one with the same
  output (``base64.b32encode``/``b32decode``; ``base64.z85encode`` exists from
  Python 3.13 but its layout is neither Z85B's nor Z85P's, so it is shown for
  reference only),
* ``pure``: this package's pure-Python code (what runs without the extension,
  and the only alternative for basE91 and the two Z85 layouts).

The ``C/best`` column is C's time over the faster of ``stdlib`` and ``pure``:
below 1 the C path is faster. An encoding whose C path is not clearly faster
than the standard library has no reason to be in C.

Usage: ``python benchmarks/speedups.py [--seconds 0.2] [--module NAME] [--json]``
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import os
import sys
import timeit
from collections.abc import Callable
from typing import Any

os.environ.pop("HIVEMIND_PURE_PYTHON", None)

from hivemind_bus_client.protocol import encodings
from hivemind_bus_client.protocol.encodings import PURE_CODECS, SupportedEncodings

E = SupportedEncodings
SIZES = (64, 1024, 65536)

#: encoding -> (C function names, stdlib (encode, decode) with identical output, or None)
CANDIDATES: dict[SupportedEncodings, tuple[tuple[str, str], tuple[Callable, Callable] | None]] = {
    E.JSON_B91: (("b91_encode", "b91_decode"), None),
    E.JSON_Z85B: (("z85b_encode", "z85b_decode"), None),
    E.JSON_Z85P: (("z85p_encode", "z85p_decode"), None),
    E.JSON_B32: (
        ("b32_encode", "b32_decode"),
        (lambda b: base64.b32encode(b).decode("ascii"), base64.b32decode),
    ),
    E.JSON_B64: (
        ("b64_encode", "b64_decode"),
        (lambda b: base64.b64encode(b).decode("ascii"), base64.b64decode),
    ),
    E.JSON_HEX: (("hex_encode", "hex_decode"), (bytes.hex, bytes.fromhex)),
}


def per_call(fn: Callable[[Any], Any], arg: Any, seconds: float) -> float:
    """Best-of-5 seconds per call of ``fn(arg)``."""
    timer = timeit.Timer(lambda: fn(arg))
    n, took = timer.autorange()
    reps = max(1, int(n * seconds / max(took, 1e-9)))
    return min(timer.repeat(5, reps)) / reps


def measure(module: Any, seconds: float) -> list[dict[str, Any]]:
    rows = []
    for enc, ((c_enc_name, c_dec_name), std) in CANDIDATES.items():
        c_enc = getattr(module, c_enc_name, None) if module else None
        c_dec = getattr(module, c_dec_name, None) if module else None
        py_enc, py_dec = PURE_CODECS[enc]
        for size in SIZES:
            data = os.urandom(size)
            text = py_enc(data)
            if std is not None:
                assert std[0](data) == text and std[1](text) == data, enc
            if c_enc is not None:
                assert c_enc(data) == text and c_dec(text) == data, enc
            for op, c_fn, std_fn, py_fn, arg in (
                ("encode", c_enc, std[0] if std else None, py_enc, data),
                ("decode", c_dec, std[1] if std else None, py_dec, text),
            ):
                row: dict[str, Any] = {"encoding": enc.value, "op": op, "size": size}
                for name, fn in (("C", c_fn), ("stdlib", std_fn), ("pure", py_fn)):
                    row[name] = per_call(fn, arg, seconds) if fn is not None else None
                alternatives = [row[k] for k in ("stdlib", "pure") if row[k] is not None]
                row["C/best"] = row["C"] / min(alternatives) if row["C"] else None
                rows.append(row)
    return rows


def show(rows: list[dict[str, Any]]) -> None:
    def us(v: float | None) -> str:
        return f"{v * 1e6:10.2f}" if v is not None else f"{'-':>10}"

    print(
        f"{'encoding':<18}{'op':<8}{'bytes':>7}{'C µs':>11}{'stdlib µs':>11}{'pure µs':>11}  C/best"
    )
    for r in rows:
        ratio = f"{r['C/best']:6.2f}" if r["C/best"] is not None else "     -"
        print(
            f"{r['encoding']:<18}{r['op']:<8}{r['size']:>7}"
            f"{us(r['C'])} {us(r['stdlib'])} {us(r['pure'])}  {ratio}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.2, help="time per measurement")
    parser.add_argument(
        "--module",
        default="hivemind_bus_client.protocol._speedups",
        help="extension module to measure (a build of another revision, say)",
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    try:
        module = importlib.import_module(args.module)
    except ImportError:
        module = None
        print(f"# {args.module} is not built: C columns empty", file=sys.stderr)
    rows = measure(module, args.seconds)
    print(f"# Python {sys.version.split()[0]}, accelerator in use: {encodings.ACCELERATED}")
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        show(rows)


if __name__ == "__main__":
    main()
