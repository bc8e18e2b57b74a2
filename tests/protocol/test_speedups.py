"""The optional C accelerator ``hivemind_bus_client.protocol._speedups`` against the pure Python.

The pure-Python encoders in :mod:`hivemind_bus_client.protocol.encodings` are the
specification: for every input the C functions must return the same text or
bytes, and must fail (ValueError, turned into DecodingError / Z85DecodeError by
encodings.py) exactly where the pure functions fail. The C-vs-pure tests are
skipped, with a reason shown by ``pytest -ra``, when the extension is not built.
"""

from __future__ import annotations

import base64
import importlib
import os
import subprocess
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hivemind_bus_client.exceptions import DecodingError, Z85DecodeError
from hivemind_bus_client.protocol import encodings
from hivemind_bus_client.protocol.encodings import PURE_CODECS, SupportedEncodings

try:
    _speedups = importlib.import_module("hivemind_bus_client.protocol._speedups")
except ImportError:  # not built: no C compiler at install time
    _speedups = None

needs_c = pytest.mark.skipif(
    _speedups is None,
    reason="C accelerator hivemind_bus_client.protocol._speedups is not built "
    "(no C compiler at install time?); C-vs-pure comparison skipped",
)

NAMES = ("b91", "z85b", "z85p", "b32")
ENCODING = {
    "b91": SupportedEncodings.JSON_B91,
    "z85b": SupportedEncodings.JSON_Z85B,
    "z85p": SupportedEncodings.JSON_Z85P,
    "b32": SupportedEncodings.JSON_B32,
}
ERROR = {"b91": DecodingError, "z85b": Z85DecodeError, "z85p": Z85DecodeError, "b32": DecodingError}
ALPHABET = {
    "b91": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    '!#$%&()*+,./:;<=>?@[]^_`{|}~"',
    "z85b": "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#",
    "z85p": "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#",
    "b32": "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
}
# Characters worth throwing at every decoder: pad bytes, '=', whitespace (ASCII,
# \x1c-\x1f, latin-1 and wider Unicode), other non-ASCII, a lone surrogate,
# lower case, and ASCII outside every alphabet.
JUNK = (
    "\x00\x01\x02\x03\x04=?'-\\\"~_ aA\t\n\x0b\x0c\r\x1c\x1f\x7f\x80\x85\xa0\xe9\xff"
    "\u0100\u1680\u2000\u2028\u3000\ufeff\ud800\U0001f600"
)


def pure(name: str):
    return PURE_CODECS[ENCODING[name]]


def c_funcs(name: str):
    return getattr(_speedups, f"{name}_encode"), getattr(_speedups, f"{name}_decode")


def outcome(func, text, error):
    """("ok", result) or ("error", None); any exception other than `error` propagates."""
    try:
        return "ok", func(text)
    except error:
        return "error", None


def variants(text: str) -> list[str | bytes | bytearray]:
    """The text as str, and as bytes wherever it can be."""
    out: list[str | bytes | bytearray] = [text]
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    out += [raw, bytearray(raw)]
    return out


def assert_same_decoding(name: str, text: str) -> None:
    """Pure and C decoders agree on `text`, and the public decoder raises the pure's error."""
    c_decode = c_funcs(name)[1]
    pure_decode = pure(name)[1]
    public_decode = encodings.decoder(ENCODING[name])
    for value in variants(text):
        expected = outcome(pure_decode, value, ERROR[name])
        got = outcome(c_decode, value, ValueError)
        assert got == expected, (name, value)
        assert outcome(public_decode, value, ERROR[name]) == expected, (name, value)


# ---------------------------------------------------------------------------
# vectors produced by the reference implementation (hivemind_bus_client 0.4.4,
# z85base91 0.0.5): protocol notes §2.3-2.5 and vectors-0.4.4.txt

_HELLO = b"hello world!"
VECTORS: list[tuple[bytes, dict[str, str]]] = [
    (b"", {"b91": "", "z85b": "", "z85p": "\x00", "b32": ""}),
    (b"A", {"b91": "%A", "z85b": "+0", "z85p": "\x03k(Z(+", "b32": "IE======"}),
    (b"a", {"b91": "GB", "z85b": "c1", "z85p": "\x03ve{oc"}),
    (b"ab", {"b91": "#GD", "z85b": "pF3", "z85p": "\x02vpxip"}),
    (b"abc", {"b91": "#G(I", "z85b": "DFPa", "z85p": "\x01vpAZD"}),
    (b"abcd", {"b91": "#G(IZ", "z85b": "S7Gmw", "z85p": "\x00vpA.S"}),
    (b"hello", {"b91": "TPwJh>A", "z85b": "@V0&yq1", "z85p": "\x03xK#0@zVx+q", "b32": "NBSWY3DP"}),
    (
        _HELLO,
        {
            "b91": "TPwJh>Io2Tv!8PE",
            "z85b": "@V0&yxs9*zfzk.a",
            "z85p": "\x00xK#0@zY<mxA+]nf",
            "b32": "NBSWY3DPEB3W64TMMQQQ====",
        },
    ),
    (
        b"Hello, World!",
        {
            "b91": ">OwJh>}AQ;r@@Y?F",
            "z85b": "NV0&yj5f0s8pDnwx0",
            "z85p": "\x03nm=QNz.92jz/PV8aPIGx",
        },
    ),
    (
        bytes(range(16)),
        {
            "b91": ":C#(:C?hVB$MSiVEwndB",
            "z85b": "6Ge%0mt>l2CgNK3S3o?4",
            "z85p": "\x00009c61o!#m2NH?C3>iWS",
        },
    ),
    (
        bytes(range(20)),
        {
            "b91": ":C#(:C?hVB$MSiVEwndBAMZRB",
            "z85b": "6Ge%0mt>l2CgNK3S3o?4*($a6",
            "z85p": "\x00009c61o!#m2NH?C3>iWS5d]J*",
            "b32": "AAAQEAYEAUDAOCAJBIFQYDIOB4IBCEQT",
        },
    ),
]
VECTOR_CASES = [(name, raw, text) for raw, texts in VECTORS for name, text in texts.items()]


def _vector_id(case) -> str:
    name, raw, _ = case
    return f"{name}-{raw[:6].hex() or 'empty'}-{len(raw)}"


@pytest.mark.parametrize("case", VECTOR_CASES, ids=_vector_id)
def test_vectors_pure(case):
    name, raw, text = case
    encode, decode = pure(name)
    assert encode(raw) == text
    assert decode(text) == raw
    assert decode(text.encode("latin-1")) == raw


@needs_c
@pytest.mark.parametrize("case", VECTOR_CASES, ids=_vector_id)
def test_vectors_c(case):
    name, raw, text = case
    encode, decode = c_funcs(name)
    assert encode(raw) == text
    assert decode(text) == raw
    assert decode(text.encode("latin-1")) == raw


@pytest.mark.parametrize("case", VECTOR_CASES, ids=_vector_id)
def test_vectors_public(case):
    """Whatever implementation is in use, the public API meets the vectors."""
    name, raw, text = case
    assert encodings.encode(raw, ENCODING[name]) == text
    assert encodings.decode(text, ENCODING[name]) == raw


# ---------------------------------------------------------------------------
# the switch between C and pure Python


def test_accelerated_flag():
    forced_pure = os.environ.get("HIVEMIND_PURE_PYTHON", "").strip().lower() not in (
        "",
        "0",
        "false",
        "no",
    )
    assert encodings.ACCELERATED is (_speedups is not None and not forced_pure)
    for name in NAMES:
        codec = encodings._CODECS[ENCODING[name]]
        if encodings.ACCELERATED:
            assert codec[0] is getattr(_speedups, f"{name}_encode")
            assert codec[1] is not pure(name)[1]
        else:
            assert codec == pure(name)
    for enc in (
        SupportedEncodings.JSON_B64,
        SupportedEncodings.JSON_URLSAFE_B64,
        SupportedEncodings.JSON_HEX,
    ):
        assert encodings._CODECS[enc] == PURE_CODECS[enc]


def _probe(env_value: str | None) -> str:
    env = dict(os.environ)
    env.pop("HIVEMIND_PURE_PYTHON", None)
    if env_value is not None:
        env["HIVEMIND_PURE_PYTHON"] = env_value
    code = (
        "from hivemind_bus_client.protocol import encodings as e;"
        "print(e.ACCELERATED, e.b91_encode is e._py_b91_encode)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


def test_env_var_forces_pure_python():
    assert _probe("1") == "False True"


@needs_c
def test_extension_used_by_default():
    assert _probe(None) == "True False"
    assert _probe("0") == "True False"


@needs_c
def test_extension_exports():
    public = sorted(n for n in dir(_speedups) if not n.startswith("_"))
    assert public == sorted(f"{n}_{op}" for n in NAMES for op in ("encode", "decode"))
    assert _speedups.__name__ == "hivemind_bus_client.protocol._speedups"


def test_the_extension_lives_in_the_protocol_package_only():
    with pytest.raises(ImportError):
        importlib.import_module("hivemind_bus_client._speedups")


# ---------------------------------------------------------------------------
# C == pure, encoders


@needs_c
@pytest.mark.parametrize("name", NAMES)
@given(data=st.binary(max_size=700))
@example(data=b"")
@example(data=b"\xff" * 9)
@example(data=b"\x00" * 9)
def test_encode_matches_pure(name, data):
    c_encode, c_decode = c_funcs(name)
    text = c_encode(data)
    assert type(text) is str
    assert text == pure(name)[0](data)
    assert c_encode(bytearray(data)) == text
    assert c_encode(memoryview(data)) == text
    assert c_decode(text) == data
    assert c_decode(text.encode("latin-1")) == data


@needs_c
def test_b32_encode_is_stdlib():
    for n in range(41):
        data = os.urandom(n)
        assert _speedups.b32_encode(data) == base64.b32encode(data).decode("ascii")


@needs_c
@pytest.mark.parametrize("name", NAMES)
def test_encoders_reject_text(name):
    with pytest.raises(TypeError):
        c_funcs(name)[0]("abc")


# ---------------------------------------------------------------------------
# C == pure, decoders


@st.composite
def decoder_texts(draw, name: str) -> str:
    """Mostly-valid and invalid text for one decoder."""
    alphabet = ALPHABET[name]
    kind = draw(st.sampled_from(("alphabet", "mixed", "unicode", "near-valid", "padding")))
    if kind == "alphabet":
        return draw(st.text(st.sampled_from(alphabet), max_size=40))
    if kind == "mixed":
        chars = st.one_of(st.sampled_from(alphabet), st.sampled_from(JUNK))
        return draw(st.text(chars, max_size=40))
    if kind == "unicode":
        return draw(st.text(st.characters(exclude_categories=()), max_size=20))
    if kind == "padding":
        # lengths and trailing characters that exercise the pad rules
        body = draw(st.text(st.sampled_from(alphabet), max_size=24))
        tail = draw(st.text(st.sampled_from("=\x00\x01\x02\x03 "), max_size=9))
        head = draw(st.sampled_from(("", "\x00", "\x01", "\x02", "\x03", "\x04", "=")))
        return head + body + tail
    # a valid encoding, then a few edits
    text = pure(name)[0](draw(st.binary(max_size=30)))
    edits = draw(
        st.lists(
            st.tuples(
                st.sampled_from("drit"),
                st.integers(0, 64),
                st.sampled_from(alphabet + JUNK),
            ),
            max_size=3,
        )
    )
    for op, pos, ch in edits:
        pos = pos % (len(text) + 1)
        if op == "d":
            text = text[:pos] + text[pos + 1 :]
        elif op == "r":
            text = text[:pos] + ch + text[pos + 1 :]
        elif op == "i":
            text = text[:pos] + ch + text[pos:]
        else:
            text = text[:pos]
    return text


#: Inputs that once told the C decoders and the pure ones apart, per codec.
DECODE_REGRESSIONS = {
    "b91": ["", "A", '""', "GB\u0100"],
    "z85b": ["", "c", "#####", "c1\u3000", "\x85c\xa01\x1c", "S7G mw\n"],
    "z85p": [
        "",
        "\x00",
        "\x01",
        "\x04",
        "\x00#####",
        "\x00\u0100\u0100\u0100\u0100\u0100",
        "\x03ve{o\ud800",
    ],
    "b32": ["", "========", "A=======", "AA======", "AA=A====", "aa======", "IE======\u0100"],
}


@needs_c
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=400)
@given(data=st.data())
def test_decode_matches_pure(name, data):
    assert_same_decoding(name, data.draw(decoder_texts(name)))


@needs_c
@pytest.mark.parametrize(
    ("name", "text"), [(n, t) for n, texts in DECODE_REGRESSIONS.items() for t in texts]
)
def test_decode_regressions_match_pure(name, text):
    assert_same_decoding(name, text)


@needs_c
@pytest.mark.parametrize("name", NAMES)
def test_every_latin1_character(name):
    """Each of the 256 code points alone, and inside otherwise valid text."""
    valid = pure(name)[0](b"hello")
    for i in range(256):
        ch = chr(i)
        for text in (ch, ch * 2, ch * 5, valid + ch, ch + valid, valid[:2] + ch + valid[2:]):
            assert_same_decoding(name, text)


@needs_c
@pytest.mark.parametrize("name", ("z85b", "z85p"))
def test_z85_group_range(name):
    """Groups up to 2**32 - 1 decode; 2**32 and above are rejected, as in the pure code."""
    c_decode = c_funcs(name)[1]
    alphabet = ALPHABET[name]

    def group(value: int) -> str:
        digits = [alphabet[(value // 85**i) % 85] for i in range(5)]  # least significant first
        return "".join(digits) if name == "z85b" else "\x00" + "".join(reversed(digits))

    assert c_decode(group(2**32 - 1)) == b"\xff\xff\xff\xff"
    for value in (2**32, 2**32 + 1, 85**5 - 1):
        text = group(value)
        with pytest.raises(ValueError):
            c_decode(text)
        with pytest.raises(Z85DecodeError):
            pure(name)[1](text)
        assert_same_decoding(name, text)
        assert_same_decoding(name, c_funcs(name)[0](b"abcdefgh")[:-5] + text[-5:])


@needs_c
@pytest.mark.parametrize("name", NAMES)
def test_large_inputs(name):
    """Inputs large enough for the C code to release the GIL."""
    c_encode, c_decode = c_funcs(name)
    data = os.urandom(150_001)
    text = c_encode(data)
    assert text == pure(name)[0](data)
    assert c_decode(text) == data
    assert c_decode(text.encode("latin-1")) == data
    broken = text[:-1] + "\u0100"
    assert outcome(c_decode, broken, ValueError) == outcome(pure(name)[1], broken, ERROR[name])


@needs_c
@pytest.mark.parametrize("name", NAMES)
def test_decoders_reject_non_text(name):
    c_decode = c_funcs(name)[1]
    for value in (None, 5, 1.5, ["a"]):
        with pytest.raises(TypeError):
            c_decode(value)
