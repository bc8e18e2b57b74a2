"""Golden-vector generator that runs INSIDE the reference venv.

Do not run this with our own interpreter: ``tests/vectors/generate.py`` builds
the throwaway reference venv (``tests/refenv.py``) and runs this file with its
Python. It imports the reference packages (hivemind-bus-client 0.4.4,
poorman-handshake, z85base91, ovos-bus-client), drives their public functions
and writes one JSON object per line.

Randomness: the reference draws AES-GCM / ChaCha20-Poly1305 nonces, password
IVs, RSA keys, OAEP seeds, PSS salts and handshake secrets from pycryptodomex's
``get_random_bytes``. We swap that function (and the module-level aliases of it
that the reference and pycryptodomex hold) for a scripted or seeded source while
a record is produced, so the reference code runs unmodified and the output is
reproducible byte for byte.

Usage (normally via generate.py): ``<ref-python> _ref_generate.py [OUTPUT]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import platform
import sys
from collections.abc import Callable, Iterator
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

import Cryptodome.Cipher._mode_gcm as _gcm_mod
import Cryptodome.Cipher.ChaCha20_Poly1305 as _chacha_mod
import Cryptodome.Random as _random_mod
import poorman_handshake.asymmetric as _pm_asym
import poorman_handshake.symmetric.utils as _pm_sym_utils
import z85base91
from ovos_bus_client import Message
from poorman_handshake import HalfHandShake, HandShake, PasswordHandShake

from hivemind_bus_client.client import HiveMessageBusClient
from hivemind_bus_client.encryption import (
    SupportedCiphers,
    SupportedEncodings,
    decrypt_bin,
    decrypt_from_json,
    encrypt_as_json,
    encrypt_bin,
    get_encoder,
)
from hivemind_bus_client.message import HiveMessage, HiveMindBinaryPayloadType
from hivemind_bus_client.serialization import decode_bitstring, get_bitstring

Desc = dict[str, Any]
Record = dict[str, Any]

DEFAULT_OUTPUT = Path(__file__).with_name("reference-0.4.4.jsonl")

ENCODINGS = [e.value for e in SupportedEncodings]
CIPHERS = [c.value for c in SupportedCiphers]
NONCE_SIZE = {"AES-GCM": 16, "CHACHA20-POLY1305": 12}
TAG_SIZE = 16
WRAPPER_TYPES = {"broadcast", "propagate", "escalate", "cascade"}

#: Legacy pre-shared key (16 UTF-8 characters -> AES-128).
PSK = b"0123456789abcdef"
KEY24 = bytes(range(24))
KEY32 = bytes(range(32))
#: Session key of the password handshake "secretpassword" (CLIENT-REFERENCE.md 4.3).
SESSION_KEY = bytes.fromhex("8dbf7862d07cbc5e41e99c02820bad20cbc0bfc30a7b205e10c85c1df7dd5130")

#: 94-byte plaintext used by CLIENT-REFERENCE.md 3.1 and 19-byte one of vectors-0.4.4.txt.
P94 = (
    '{"msg_type": "bus", "payload": {"type": "speak", "data": {"utterance": "hi"}, "context": {}}}'
)
P19 = '{"msg_type": "bus"}'

REFERENCE_DISTS = (
    "hivemind-bus-client",
    "hivemind-core",
    "poorman-handshake",
    "z85base91",
    "bitstring",
    "pycryptodomex",
    "pybase64",
    "ovos-bus-client",
    "ovos-utils",
)


# --------------------------------------------------------------------------- randomness


def prand(label: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes: SHA-256 in counter mode over ``label``."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{label}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


class Scripted:
    """Random source that hands out pre-set chunks, checking each requested size."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    def __call__(self, size: int) -> bytes:
        """Return the next chunk; fail if the reference asks for something else."""
        if not self.chunks:
            raise AssertionError(f"unexpected random draw of {size} bytes")
        chunk = self.chunks.pop(0)
        if len(chunk) != size:
            raise AssertionError(f"random draw of {size} bytes, scripted {len(chunk)}")
        return chunk


class Seeded:
    """Endless deterministic random source (SHA-256 counter stream)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.counter = 0
        self.buffer = b""

    def __call__(self, size: int) -> bytes:
        """Return the next ``size`` bytes of the stream."""
        while len(self.buffer) < size:
            self.buffer += hashlib.sha256(f"{self.label}:{self.counter}".encode()).digest()
            self.counter += 1
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out


#: Every module-level name through which the reference reaches os.urandom.
_RANDOM_SLOTS: tuple[tuple[Any, str], ...] = (
    (_random_mod, "get_random_bytes"),
    (_random_mod, "urandom"),
    (_gcm_mod, "get_random_bytes"),
    (_chacha_mod, "get_random_bytes"),
    (_pm_sym_utils, "get_random_bytes"),
    (_pm_asym, "get_random_bytes"),
)


@contextlib.contextmanager
def random_source(source: Callable[[int], bytes]) -> Iterator[None]:
    """Route the reference's random draws to ``source`` for the duration."""
    saved = [(mod, name, getattr(mod, name)) for mod, name in _RANDOM_SLOTS]
    try:
        for mod, name, _ in saved:
            setattr(mod, name, source)
        yield
    finally:
        for mod, name, original in saved:
            setattr(mod, name, original)
    if isinstance(source, Scripted) and source.chunks:
        raise AssertionError("scripted random bytes were not consumed")


def nonce_for(label: str, cipher: str) -> bytes:
    """Fixed per-record nonce of the right size for ``cipher``."""
    return prand(f"nonce:{label}", NONCE_SIZE[cipher])


def ref_encrypt_bin(key: bytes, plaintext: bytes | str, cipher: str, nonce: bytes) -> bytes:
    """Reference ``encrypt_bin`` with the nonce pinned."""
    with random_source(Scripted(nonce)):
        return encrypt_bin(key, plaintext, cipher)


def ref_encrypt_json(key: bytes, plaintext: str, cipher: str, encoding: str, nonce: bytes) -> str:
    """Reference ``encrypt_as_json`` with the nonce pinned."""
    with random_source(Scripted(nonce)):
        return encrypt_as_json(key, plaintext, cipher, encoding)


# --------------------------------------------------------------------------- messages


def bus(msg_type: str, data: dict[str, Any], context: dict[str, Any] | None = None) -> Desc:
    """OVOS message payload dict."""
    return {"type": msg_type, "data": data, "context": context or {}}


def build(desc: Desc) -> HiveMessage:
    """Rebuild a reference HiveMessage from a record description."""
    msg_type = desc["msg_type"]
    payload: Any = desc.get("payload")
    if msg_type in WRAPPER_TYPES:
        payload = build(payload).as_dict  # 0.4.4 stores a HiveMessage payload as is
    elif msg_type == "bin":
        payload = bytes.fromhex(payload["__bytes_hex__"])
    elif msg_type in ("bus", "shared_bus"):
        payload = Message(payload["type"], payload["data"], payload["context"])
    return HiveMessage(
        msg_type,
        payload=payload,
        node=desc.get("node"),
        source_peer=desc.get("source_peer"),
        route=desc.get("route"),
        target_site_id=desc.get("target_site_id"),
        target_pubkey=desc.get("target_pubkey"),
        bin_type=HiveMindBinaryPayloadType(desc.get("bin_type", 0)),
        metadata=desc.get("metadata"),
    )


def bitstring(msg: HiveMessage, compressed: bool, versioned: bool = False) -> bytes:
    """Binary v1 frame exactly as the reference client builds it (typed payload view)."""
    bits = get_bitstring(
        hive_type=msg.msg_type,
        payload=msg.payload,
        compressed=compressed,
        hivemeta=msg.metadata,
        binary_type=msg.bin_type,
        versioned=versioned,
    )
    return bits.bytes


SESSION_ID = "8b7e3c1a-5f2d-4e6b-9a0c-1d2e3f405162"
UA = "HiveMessageBusClientV0.0.1"
HUB_PEER = "HiveMessageBusClientV0.0.1::1::kitchen-sat::default"
FAKE_PEM = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----"

SPEAK_HI = bus("speak", {"utterance": "hi"})
UTTERANCE_UNICODE = bus(
    "recognizer_loop:utterance",
    {"utterances": ["こんにちは"], "lang": "ja-JP"},
    {
        "source": UA,
        "destination": "HiveMind",
        "platform": UA,
        "session": {"session_id": SESSION_ID, "site_id": "Büro"},
    },
)
CLIENT_UTTERANCE = bus(
    "recognizer_loop:utterance",
    {"utterances": ["what time is it"]},
    {
        "destination": "skills",
        "source": UA,
        "platform": UA,
        "session": {"session_id": SESSION_ID, "site_id": "kitchen"},
    },
)


def _messages() -> dict[str, Desc]:
    """The non-BINARY messages covered by message_json/binary/frame records."""
    inner_bus = {"msg_type": "bus", "payload": SPEAK_HI}
    inner_routed = {
        "msg_type": "bus",
        "payload": bus("speak", {"utterance": "olá mundo"}, {"source": "skills"}),
        "route": [{"source": "hub-a", "targets": ["sat-1", "sat-2"]}],
        "source_peer": "hub-a",
        "target_site_id": "living room",
    }
    query_inner = HiveMessage("bus", Message("what_time", {"lang": "de-DE", "q": "Zürich"})).as_dict
    return {
        "bus_speak_hi": {"msg_type": "bus", "payload": SPEAK_HI},
        "bus_utterance_unicode": {"msg_type": "bus", "payload": UTTERANCE_UNICODE},
        "bus_metadata": {"msg_type": "bus", "payload": SPEAK_HI, "metadata": {"a": 1}},
        "bus_client_utterance": {"msg_type": "bus", "payload": CLIENT_UTTERANCE},
        "shared_bus": {
            "msg_type": "shared_bus",
            "payload": bus(
                "speak",
                {"utterance": "it is 5 o'clock", "expect_response": False, "lang": "en-US"},
                {"source": "skills", "destination": ["audio"], "skill_id": "time.skill"},
            ),
        },
        "broadcast_bus": {
            "msg_type": "broadcast",
            "payload": inner_bus,
            "target_site_id": "kitchen",
        },
        "broadcast_route": {
            "msg_type": "broadcast",
            "payload": inner_routed,
            "route": [{"source": "hub-a", "targets": ["sat-1"]}],
            "node": "hub-a",
            "source_peer": "hub-a::sess",
            "target_site_id": "Büro",
        },
        "propagate_bus": {
            "msg_type": "propagate",
            "payload": inner_bus,
            "route": [
                {"source": "sat-1", "targets": ["hub-a"]},
                {"source": "hub-a", "targets": ["hub-root", "sat-2"]},
            ],
            "source_peer": "sat-1",
        },
        "escalate_bus": {
            "msg_type": "escalate",
            "payload": {
                "msg_type": "bus",
                "payload": CLIENT_UTTERANCE,
                "metadata": {"priority": "high"},
            },
            "source_peer": "HiveMessageBusClientV0.0.1::3::sat::" + SESSION_ID,
        },
        "cascade_bus": {
            "msg_type": "cascade",
            "payload": {"msg_type": "bus", "payload": bus("ovos.common_query.ping", {})},
            "node": "master:0.0.0.0",
        },
        "propagate_broadcast_bus": {
            "msg_type": "propagate",
            "payload": {"msg_type": "broadcast", "payload": inner_bus, "target_site_id": "garage"},
        },
        "query": {"msg_type": "query", "payload": query_inner},
        "ping": {
            "msg_type": "ping",
            "payload": {
                "flood_id": "0f1e2d3c",
                "peer": "master:0.0.0.0",
                "site_id": "kitchen",
                "timestamp": 1700000000.25,
            },
        },
        "rendezvous": {"msg_type": "rendezvous", "payload": {"ts": 1}},
        "hello_hub": {
            "msg_type": "hello",
            "payload": {"pubkey": FAKE_PEM, "peer": HUB_PEER, "node_id": "master:0.0.0.0"},
        },
        "hello_client": {
            "msg_type": "hello",
            "payload": {
                "pubkey": None,
                "session": {"session_id": SESSION_ID, "site_id": "unknown", "lang": "en-US"},
                "site_id": "kitchen",
            },
        },
        "handshake_hub": {
            "msg_type": "shake",
            "payload": {
                "handshake": False,
                "min_protocol_version": 0,
                "max_protocol_version": 1,
                "binarize": False,
                "preshared_key": True,
                "password": True,
                "crypto_required": True,
                "encodings": ENCODINGS,
                "ciphers": CIPHERS,
            },
        },
        "handshake_client": {
            "msg_type": "shake",
            "payload": {
                "binarize": False,
                "encodings": ENCODINGS,
                "ciphers": CIPHERS,
                "envelope": "01020304050607089964a7682095423fb832c0f4f6d6000c",
            },
        },
        "handshake_reply": {
            "msg_type": "shake",
            "payload": {
                "envelope": "a1a2a3a4a5a6a7a85ab5f4e136e595eb03e00722c4291cd3",
                "encoding": "JSON-B91",
                "cipher": "AES-GCM",
            },
        },
        "thirdparty": {
            "msg_type": "3rdparty",
            "payload": {"custom": "ünïcode ✓", "n": [1, 2.5, -3], "nested": {"x": None, "y": True}},
        },
        "thirdparty_empty": {"msg_type": "3rdparty", "payload": {}},
        "intercom": {
            "msg_type": "intercom",
            "payload": {"ciphertext": "abc", "signature": "def"},
            "target_pubkey": FAKE_PEM,
        },
    }


MESSAGES = _messages()

AUDIO_META = {"sample_rate": 16000, "sample_width": 2}
FILE_META = {"file_name": "a.wav", "lang": "en-US", "utterance": "olá"}


def binary_desc(bin_type: int, payload: bytes, meta: dict[str, Any]) -> Desc:
    """Description of a BINARY message (defaults omitted)."""
    desc: Desc = {"msg_type": "bin", "payload": {"__bytes_hex__": payload.hex()}}
    if meta:
        desc["metadata"] = meta
    if bin_type:
        desc["bin_type"] = bin_type
    return desc


def _binary_messages() -> dict[str, Desc]:
    """BINARY messages: every bin_type 0..6 with several sizes and metadata shapes."""
    out: dict[str, Desc] = {}
    shapes = [(0, {}), (1, AUDIO_META), (3, FILE_META), (100, {})]
    for bin_type in range(7):
        for size, meta in shapes:
            payload = prand(f"bin:{bin_type}:{size}", size)
            out[f"bin_t{bin_type}_n{size}"] = binary_desc(bin_type, payload, meta)
    out["bin_t1_n5000_audio"] = binary_desc(1, prand("bin:audio5000", 5000), AUDIO_META)
    out["bin_t6_n5000_tts"] = binary_desc(6, prand("bin:tts5000", 5000), FILE_META)
    out["bin_t1_01020304"] = binary_desc(1, bytes([1, 2, 3, 4]), AUDIO_META)
    out["bin_t6_ff"] = binary_desc(6, b"\xff", {})
    return out


BINARY_MESSAGES = _binary_messages()

#: Messages of the frame matrix (full send pipeline).
FRAME_TEXT = [
    "bus_speak_hi",
    "bus_utterance_unicode",
    "bus_client_utterance",
    "broadcast_route",
    "propagate_bus",
    "query",
    "ping",
    "hello_client",
]
FRAME_BINARY = [*FRAME_TEXT[:7], "bin_t1_01020304", "bin_t6_n100"]
VERSIONED = ["bus_speak_hi", "broadcast_bus", "ping", "bin_t1_01020304", "bin_t6_ff"]


# --------------------------------------------------------------------------- record builders


def meta_record() -> Record:
    """Header: versions of everything that shapes the bytes."""
    versions = {dist: pkg_metadata.version(dist) for dist in REFERENCE_DISTS}
    orjson = importlib.util.find_spec("orjson") is not None
    if orjson:
        raise SystemExit(
            "orjson is installed in the reference venv: BUS payload bytes would change"
        )
    if Message("probe")._secret_key:
        raise SystemExit("an OVOS bus secret_key is configured: Message.serialize would encrypt")
    backend = "C" if z85base91.Z85P.__module__ == "z85base91" else "python"
    return {
        "kind": "meta",
        "reference": versions,
        "orjson": orjson,
        "python": ".".join(platform.python_version_tuple()[:2]),
        "machine": platform.machine(),
        "z85base91_backend": backend,
        "generator": "tests/vectors/_ref_generate.py",
    }


def encoding_records() -> Iterator[Record]:
    """Every encoding over pseudo-random inputs plus the inputs of the notes."""
    inputs = [prand(f"enc:{n}", n) for n in [*range(21), 31, 64, 255, 1000]]
    inputs += [b"a", b"ab", b"abc", b"abcd", b"A", b"hello", b"hello world!", b"Hello, World!"]
    inputs += [bytes(range(16)), bytes(range(20)), b"\x00" * 5, b"\xff" * 7]
    seen: set[bytes] = set()
    for data in inputs:
        if data in seen:
            continue
        seen.add(data)
        for encoding in ENCODINGS:
            output = get_encoder(encoding)(data).decode("utf-8")
            yield {
                "kind": "encoding",
                "encoding": encoding,
                "input_hex": data.hex(),
                "output": output,
            }


def message_json_records() -> Iterator[Record]:
    """``HiveMessage.serialize()`` of every non-BINARY message."""
    for name, desc in MESSAGES.items():
        yield {
            "kind": "message_json",
            "name": name,
            "message": desc,
            "json": build(desc).serialize(),
        }


def binary_records() -> Iterator[Record]:
    """Bitstring encoder output, compressed and not, versioned for a few."""
    for name, desc in {**MESSAGES, **BINARY_MESSAGES}.items():
        msg = build(desc)
        for versioned in (False, True) if name in VERSIONED else (False,):
            for compressed in (True, False):
                yield {
                    "kind": "binary",
                    "name": name,
                    "message": desc,
                    "compressed": compressed,
                    "versioned": versioned,
                    "frame_hex": bitstring(msg, compressed, versioned).hex(),
                }


def cipher_records() -> Iterator[Record]:
    """Reference ``encrypt_bin`` with pinned nonces, split into parts."""
    keys = [("AES-GCM", PSK), ("AES-GCM", KEY24), ("AES-GCM", KEY32), ("CHACHA20-POLY1305", KEY32)]
    for cipher, key in keys:
        for size in (0, 1, 19, 94, 300, 4000):
            if size == 19:
                plaintext, nonce = P19.encode(), bytes(range(0x64, 0x64 + NONCE_SIZE[cipher]))
            elif size == 94:
                plaintext, nonce = P94.encode(), bytes(range(NONCE_SIZE[cipher]))
            else:
                plaintext = prand(f"pt:{size}", size)
                nonce = nonce_for(f"cipher:{cipher}:{len(key)}:{size}", cipher)
            frame = ref_encrypt_bin(key, plaintext, cipher, nonce)
            n = len(nonce)
            assert frame[:n] == nonce
            assert decrypt_bin(key, frame, cipher) == plaintext
            yield {
                "kind": "cipher",
                "cipher": cipher,
                "key_hex": key.hex(),
                "nonce_hex": nonce.hex(),
                "plaintext_hex": plaintext.hex(),
                "ciphertext_hex": frame[n:-TAG_SIZE].hex(),
                "tag_hex": frame[-TAG_SIZE:].hex(),
                "binary_frame_hex": frame.hex(),
            }


def text_envelope_records() -> Iterator[Record]:
    """Reference ``encrypt_as_json`` for each cipher x encoding, pinned nonces."""
    plaintexts = [("p94", P94), ("unicode", 'olá — こんにちは "quoted" \\ end'), ("empty", "")]
    for cipher, key in (("AES-GCM", PSK), ("CHACHA20-POLY1305", KEY32)):
        for encoding in ENCODINGS:
            for label, plaintext in plaintexts:
                if label == "p94":
                    nonce = bytes(range(NONCE_SIZE[cipher]))
                else:
                    nonce = nonce_for(f"env:{label}", cipher)
                frame = ref_encrypt_json(key, plaintext, cipher, encoding, nonce)
                yield {
                    "kind": "text_envelope",
                    "cipher": cipher,
                    "encoding": encoding,
                    "key_hex": key.hex(),
                    "nonce_hex": nonce.hex(),
                    "plaintext": plaintext,
                    "frame": frame,
                }


def frame_records() -> Iterator[Record]:
    """Full send pipeline: text envelopes of ``serialize()`` and encrypted bitstrings."""
    keys = {"AES-GCM": SESSION_KEY, "CHACHA20-POLY1305": SESSION_KEY}
    for name in FRAME_TEXT:
        desc = MESSAGES[name]
        plaintext = build(desc).serialize()
        combos = [(c, e, keys[c]) for c in CIPHERS for e in ENCODINGS]
        combos.append(("AES-GCM", "JSON-HEX", PSK))  # legacy pre-shared key defaults
        for cipher, encoding, key in combos:
            if name == "bus_speak_hi":
                nonce = bytes(range(NONCE_SIZE[cipher]))
            else:
                nonce = nonce_for(f"text:{name}:{cipher}:{encoding}:{len(key)}", cipher)
            yield {
                "kind": "frame",
                "transport": "text",
                "name": name,
                "message": desc,
                "cipher": cipher,
                "encoding": encoding,
                "key_hex": key.hex(),
                "nonce_hex": nonce.hex(),
                "plaintext": plaintext,
                "frame": ref_encrypt_json(key, plaintext, cipher, encoding, nonce),
            }
    all_messages = {**MESSAGES, **BINARY_MESSAGES}
    for name in FRAME_BINARY:
        desc = all_messages[name]
        msg = build(desc)
        combos = [(c, comp, keys[c]) for c in CIPHERS for comp in (True, False)]
        combos.append(("AES-GCM", True, PSK))
        for cipher, compressed, key in combos:
            if name == "bus_speak_hi":
                nonce = bytes(range(NONCE_SIZE[cipher]))
            else:
                nonce = nonce_for(f"bin:{name}:{cipher}:{compressed}:{len(key)}", cipher)
            plain = bitstring(msg, compressed)
            yield {
                "kind": "frame",
                "transport": "binary",
                "name": name,
                "message": desc,
                "cipher": cipher,
                "compressed": compressed,
                "key_hex": key.hex(),
                "nonce_hex": nonce.hex(),
                "bitstring_hex": plain.hex(),
                "frame_hex": ref_encrypt_bin(key, plain, cipher, nonce).hex(),
            }


PASSWORDS = [
    "secret",
    "secretpassword",
    "",
    "pässwörd",
    "パスワード",
    "0123456789abcdef",
    "x" * 100,
]
SESSION_CASES = [
    ("secret", bytes(range(8)), bytes(range(8, 16))),
    ("secretpassword", bytes(range(1, 9)), bytes(range(0xA1, 0xA9))),
    ("pässwörd", prand("iv:a:1", 8), prand("iv:b:1", 8)),
    ("パスワード", prand("iv:a:2", 8), prand("iv:b:2", 8)),
    ("", prand("iv:a:3", 8), prand("iv:b:3", 8)),
    ("same-iv", bytes(8), bytes(8)),
]


def password_envelope(password: str, iv: bytes) -> tuple[PasswordHandShake, str]:
    """A PasswordHandShake whose IV is pinned, and its envelope."""
    shake = PasswordHandShake(password)
    with random_source(Scripted(iv)):
        envelope = shake.generate_handshake()
    return shake, envelope


def password_records() -> Iterator[Record]:
    """Password envelopes, then session keys derived the way hub and client do."""
    for i, password in enumerate(PASSWORDS):
        ivs = [prand(f"iv:{i}", 8)]
        if password == "secret":
            ivs.insert(0, bytes(range(8)))
        if password == "secretpassword":
            ivs = [bytes(range(1, 9)), bytes(range(0xA1, 0xA9))]
        for iv in ivs:
            shake, envelope = password_envelope(password, iv)
            assert shake.verify(envelope)
            yield {
                "kind": "password_envelope",
                "password": password,
                "iv_hex": iv.hex(),
                "envelope": envelope,
            }
    for password, iv_a, iv_b in SESSION_CASES:
        client, env_a = password_envelope(password, iv_a)
        hub, env_b = password_envelope(password, iv_b)
        assert client.receive_and_verify(env_b)  # what the stock client does
        hub.receive_handshake(env_a)  # the stock hub does not verify
        assert client.secret == hub.secret
        yield {
            "kind": "session_key",
            "password": password,
            "iv_a_hex": iv_a.hex(),
            "iv_b_hex": iv_b.hex(),
            "envelope_a": env_a,
            "envelope_b": env_b,
            "salt_hex": client.salt.hex(),
            "key_hex": client.secret.hex(),
        }


def rsa_records() -> Iterator[Record]:
    """Hub-side RSA handshake envelopes, made reproducible by a seeded random source."""
    for i in range(3):
        with random_source(Seeded(f"rsa:{i}")):
            hub = HandShake()
            client = HalfHandShake()
            envelope = hub.generate_handshake(client.pubkey)
            client.receive_and_verify(envelope, hub.pubkey)
        assert client.secret == hub.secret and len(hub.secret) == 32
        yield {
            "kind": "rsa_handshake",
            "client_private_pem": client.private_key.export_key(format="PEM").decode(),
            "client_public_pem": client.pubkey,
            "hub_private_pem": hub.private_key.export_key(format="PEM").decode(),
            "hub_public_pem": hub.pubkey,
            "envelope": envelope,
            "secret_hex": hub.secret.hex(),
        }


def authorization_records() -> Iterator[Record]:
    """``HiveMessageBusClient.build_url`` query values."""
    cases = [
        (UA, "ACCESSKEY"),
        ("MyUA", "K"),
        (UA, "clé-ü-ключ"),
        ("HiveMindHTTPClientV1.0", "a3f9c0de1b2a4c5d"),
        ("ua with spaces", "key:with:colons"),
        (UA, "??>>"),  # base64 with '+' and '/'
    ]
    for useragent, key in cases:
        url = HiveMessageBusClient.build_url(
            key, host="127.0.0.1", port=5678, useragent=useragent, ssl=False
        )
        value = url.split("?authorization=", 1)[1]
        yield {
            "kind": "authorization",
            "useragent": useragent,
            "key": key,
            "value": value,
            "url": url,
        }


def decode_only_records() -> Iterator[Record]:
    """Inputs the reference decoders accept although its encoders never produce them."""
    for cipher, key in (("AES-GCM", SESSION_KEY), ("CHACHA20-POLY1305", SESSION_KEY)):
        for encoding in ("JSON-HEX", "JSON-B64", "JSON-B91", "JSON-Z85B"):
            nonce = nonce_for(f"notag:{cipher}:{encoding}", cipher)
            plaintext = build(MESSAGES["bus_speak_hi"]).serialize()
            raw = ref_encrypt_bin(key, plaintext, cipher, nonce)
            enc = get_encoder(encoding)
            frame = json.dumps(
                {"ciphertext": enc(raw[len(nonce) :]).decode(), "nonce": enc(nonce).decode()}
            )
            yield decode_text(
                f"tag_appended:{cipher}:{encoding}", cipher, encoding, key, frame, plaintext
            )
    nonce = nonce_for("upperhex", "AES-GCM")
    raw = ref_encrypt_bin(SESSION_KEY, P94, "AES-GCM", nonce)
    n = len(nonce)
    upper = {
        "ciphertext": raw[n:-TAG_SIZE].hex().upper(),
        "tag": raw[-TAG_SIZE:].hex().upper(),
        "nonce": nonce.hex().upper(),
    }
    yield decode_text("uppercase_hex", "AES-GCM", "JSON-HEX", SESSION_KEY, json.dumps(upper), P94)
    reordered = {
        "nonce": nonce.hex(),
        "tag": raw[-TAG_SIZE:].hex(),
        "ciphertext": raw[n:-TAG_SIZE].hex(),
    }
    frame = json.dumps(reordered, separators=(",", ":"))
    yield decode_text("reordered_compact", "AES-GCM", "JSON-HEX", SESSION_KEY, frame, P94)
    enc = get_encoder("JSON-URLSAFE-B64")
    unpadded = {
        k: enc(v).decode().rstrip("=")
        for k, v in (("ciphertext", raw[n:-TAG_SIZE]), ("tag", raw[-TAG_SIZE:]), ("nonce", nonce))
    }
    yield decode_text(
        "urlsafe_b64_unpadded",
        "AES-GCM",
        "JSON-URLSAFE-B64",
        SESSION_KEY,
        json.dumps(unpadded),
        P94,
    )
    for name in ("bus_speak_hi", "bin_t1_01020304"):
        desc = {**MESSAGES, **BINARY_MESSAGES}[name]
        frame = b"\x00\x00" + bitstring(build(desc), True)
        decoded = decode_bitstring(frame)
        expected = build(desc)
        assert decoded.msg_type == expected.msg_type and decoded.metadata == expected.metadata
        yield {
            "kind": "decode_only",
            "name": f"leading_zero_bytes:{name}",
            "transport": "bitstring",
            "message": desc,
            "frame_hex": frame.hex(),
        }


def decode_text(
    name: str, cipher: str, encoding: str, key: bytes, frame: str, plaintext: str
) -> Record:
    """A text envelope that the reference ``decrypt_from_json`` accepts (checked here)."""
    assert decrypt_from_json(key, frame, cipher, encoding) == plaintext, name
    return {
        "kind": "decode_only",
        "name": name,
        "transport": "text",
        "cipher": cipher,
        "encoding": encoding,
        "key_hex": key.hex(),
        "frame": frame,
        "plaintext": plaintext,
    }


def all_records() -> Iterator[Record]:
    """Every record, meta first."""
    yield meta_record()
    yield from encoding_records()
    yield from message_json_records()
    yield from binary_records()
    yield from cipher_records()
    yield from text_envelope_records()
    yield from frame_records()
    yield from password_records()
    yield from rsa_records()
    yield from authorization_records()
    yield from decode_only_records()


def main(argv: list[str]) -> int:
    """Write the JSONL file and print per-kind counts to stderr."""
    output = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUTPUT
    counts: dict[str, int] = {}
    lines = []
    for record in all_records():
        counts[record["kind"]] = counts.get(record["kind"], 0) + 1
        lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = ", ".join(f"{kind}={n}" for kind, n in counts.items())
    print(f"wrote {output} ({sum(counts.values())} records: {summary})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
