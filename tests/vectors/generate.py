"""Regenerate the golden test vectors from the reference implementation.

Usage (any Python 3.10+, e.g. our dev venv; no reference package is imported here)::

    python tests/vectors/generate.py [--output PATH]

It builds or reuses the throwaway reference venv (``tests/refenv.py``:
hivemind-bus-client 0.4.4, hivemind-core 4.0.0), then runs
``tests/vectors/_ref_generate.py`` with that venv's interpreter, which writes
``tests/vectors/reference-0.4.4.jsonl`` (or PATH). The output is byte-for-byte
reproducible: the reference's nonces, IVs and RSA randomness are pinned by
swapping its random source, never by changing its code.

File format: one JSON object per line, the first being ``{"kind": "meta", ...}``
(package versions, ``orjson: false``, platform). Binary values are lowercase hex
in ``*_hex`` fields; wire text (JSON frames, encoded strings) stays a string.
Message descriptions (``message``) hold ``msg_type``, ``payload`` and only the
non-default ``metadata``/``route``/``node``/``source_peer``/``target_site_id``/
``target_pubkey``/``bin_type``; a wrapper's payload (broadcast, propagate,
escalate, cascade) is itself a description, a BINARY payload is
``{"__bytes_hex__": ...}``. A QUERY payload is a plain dict (0.4.4 does not
type it, so its binary form is ``json.dumps`` with ASCII escapes). Record kinds:

- ``encoding``: ``encoding``, ``input_hex``, ``output`` (all 7 text encodings).
- ``message_json``: ``name``, ``message``, ``json`` (``HiveMessage.serialize()``).
- ``binary``: ``name``, ``message``, ``compressed``, ``versioned``, ``frame_hex``
  (bitstring v1). The reference decoder cannot read its own uncompressed frames.
- ``cipher``: ``cipher``, ``key_hex``, ``nonce_hex``, ``plaintext_hex``,
  ``ciphertext_hex``, ``tag_hex``, ``binary_frame_hex`` (nonce|ct|tag).
- ``text_envelope``: ``cipher``, ``encoding``, ``key_hex``, ``nonce_hex``,
  ``plaintext``, ``frame`` (``encrypt_as_json`` output).
- ``frame``: full send pipeline; ``transport`` ``text`` (``encoding``,
  ``plaintext``, ``frame``) or ``binary`` (``compressed``, ``bitstring_hex``,
  ``frame_hex``), plus ``name``, ``message``, ``cipher``, ``key_hex``, ``nonce_hex``.
- ``password_envelope``: ``password``, ``iv_hex``, ``envelope``.
- ``session_key``: ``password``, ``iv_a_hex``, ``iv_b_hex``, ``envelope_a``,
  ``envelope_b``, ``salt_hex``, ``key_hex``.
- ``rsa_handshake``: client/hub private (PKCS#1) and public PEMs, the hub's
  ``envelope`` for the client key and the ``secret_hex`` it carries.
- ``authorization``: ``useragent``, ``key``, ``value`` (query value), ``url``.
- ``decode_only``: inputs the reference accepts but never emits; ``transport``
  ``text`` (``cipher``, ``encoding``, ``key_hex``, ``frame``, ``plaintext``) or
  ``bitstring`` (``message``, ``frame_hex``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from refenv import ensure  # noqa: E402

GENERATOR = HERE / "_ref_generate.py"
OUTPUT = HERE / "reference-0.4.4.jsonl"


def main(argv: list[str] | None = None) -> int:
    """Build the reference venv if needed and run the generator inside it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT, help="JSONL file to write")
    args = parser.parse_args(argv)
    python = ensure()
    proc = subprocess.run([str(python), str(GENERATOR), str(args.output)], check=False)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
