"""INTERCOM across relays: end-to-end sealed, opened only by its recipient, trust-gated."""

from __future__ import annotations

import base64
import json

import pytest

from hivemind_bus_client import crypto, intercom
from hivemind_bus_client.intercom import IntercomResult, TrustStore
from hivemind_bus_client.message import HiveMessage, HiveMessageType

from .conftest import bus
from .mesh import Mesh, rsa_key

T = HiveMessageType
SECRET = "the-launch-code-is-0451"


def mesh_with_keys(trust_sender: bool = True) -> Mesh:
    """top <- relay <- sender, and other <- relay; everyone has an RSA key."""
    mesh = Mesh(handshake="password")
    sender_pem = crypto.public_key_pem(rsa_key(0))
    trusted = {"sender": sender_pem} if trust_sender else {}
    mesh.add("top", key=rsa_key(1), trusted_keys=trusted)
    mesh.add("relay", key=rsa_key(2), trusted_keys=trusted)
    mesh.add("sender", hub=False, key=rsa_key(0))
    mesh.add("other", hub=False, key=rsa_key(3), trusted_keys=trusted)
    mesh.connect("relay", "top")
    mesh.connect("sender", "relay")
    mesh.connect("other", "relay")
    return mesh


def sealed_for(recipient: int, **kw) -> HiveMessage:
    inner = bus("speak", utterance=SECRET)
    return intercom.seal(inner, rsa_key(recipient).public_key(), rsa_key(0), **kw)


def relay_view(mesh: Mesh, name: str) -> str:
    """Everything node ``name`` decoded from its links, as one string."""
    return "\n".join(m.serialize() for _, m in mesh[name].received)


def test_escalated_intercom_reaches_the_top_and_the_relay_sees_only_ciphertext() -> None:
    mesh = mesh_with_keys()
    mesh.originate("sender", HiveMessage(T.ESCALATE, sealed_for(1)))
    mesh.run()
    (d,) = mesh["top"].delivered
    assert d.via is T.INTERCOM and d.sender == "sender"
    assert d.message.payload.data["utterance"] == SECRET
    # The relay carried it: it decoded the link frames, yet saw no plaintext
    # and no hint of the recipient.
    seen = relay_view(mesh, "relay")
    assert "intercom" in seen and "encrypted_key" in seen
    assert SECRET not in seen
    top_pem = crypto.public_key_pem(rsa_key(1))
    assert "".join(top_pem.split()[2:5]) not in "".join(seen.split())
    for _, m in mesh["relay"].received:
        assert m.payload.target_pubkey is None
    assert mesh["relay"].delivered == []
    # And the raw frames on its links are link-encrypted on top of that.
    for wire in mesh.wires:
        assert not any(SECRET in str(f) for _, f in wire.tap)


def test_propagated_intercom_is_opened_once_by_its_recipient_only() -> None:
    mesh = mesh_with_keys()
    mesh.originate("sender", HiveMessage(T.PROPAGATE, sealed_for(3)))
    mesh.run()
    opened = {
        n: [d for d in node.delivered if d.via is T.INTERCOM] for n, node in mesh.nodes.items()
    }
    assert [len(v) for v in opened.values()] == [0, 0, 0, 1]
    assert opened["other"][0].message.payload.data["utterance"] == SECRET
    assert SECRET not in relay_view(mesh, "relay") + relay_view(mesh, "top")


def test_tampered_intercom_is_dropped_and_counted() -> None:
    mesh = mesh_with_keys()
    msg = sealed_for(1)
    ct = bytearray(base64.b64decode(msg.payload["ciphertext"]))
    ct[3] ^= 0x40
    msg.payload["ciphertext"] = base64.b64encode(bytes(ct)).decode()
    mesh.originate("sender", HiveMessage(T.ESCALATE, msg))
    mesh.run()
    assert mesh["top"].delivered == []
    assert mesh["top"].router.counters["intercom_tampered"] == 1
    assert "intercom_tampered" not in mesh["relay"].router.counters


@pytest.mark.parametrize("unsigned", [False, True])
def test_untrusted_or_unsigned_intercom_is_dropped_and_counted(unsigned: bool) -> None:
    # Signed by an unknown key, or not signed at all (even though the key is trusted).
    mesh = mesh_with_keys(trust_sender=unsigned)
    inner = bus("speak", utterance=SECRET)
    msg = intercom.seal(inner, rsa_key(1).public_key(), None if unsigned else rsa_key(0))
    mesh.originate("sender", HiveMessage(T.ESCALATE, msg))
    mesh.run()
    assert mesh["top"].delivered == []
    assert mesh["top"].router.counters["intercom_untrusted"] == 1


def test_intercom_for_nobody_is_counted_at_the_top() -> None:
    mesh = mesh_with_keys()
    mesh.originate("sender", HiveMessage(T.ESCALATE, sealed_for(5)))
    mesh.run()
    assert all(n.delivered == [] for n in mesh.nodes.values())
    assert mesh["top"].router.counters["intercom_undeliverable"] == 1


def test_legacy_rsa_only_form_is_opened() -> None:
    mesh = mesh_with_keys()
    msg = intercom.seal(
        bus("speak", utterance="hi"), rsa_key(1).public_key(), rsa_key(0), legacy=True
    )
    assert set(msg.payload) == {"ciphertext", "signature"}
    mesh.originate("sender", HiveMessage(T.ESCALATE, msg))
    mesh.run()
    (d,) = mesh["top"].delivered
    assert d.message.payload.data["utterance"] == "hi" and d.via is T.INTERCOM


def test_open_sealed_outcomes() -> None:
    trust = TrustStore({"s": crypto.public_key_pem(rsa_key(0))})
    msg = sealed_for(1)
    assert intercom.open_sealed(msg.payload, rsa_key(1), trust).result is IntercomResult.OPENED
    assert intercom.open_sealed(msg.payload, rsa_key(2), trust).result is IntercomResult.NOT_FOR_US
    assert (
        intercom.open_sealed(msg.payload, rsa_key(1), TrustStore()).result
        is IntercomResult.UNTRUSTED
    )
    bad = dict(msg.payload, tag=base64.b64encode(b"\0" * 16).decode())
    assert intercom.open_sealed(bad, rsa_key(1), trust).result is IntercomResult.TAMPERED
    for junk in ({}, {"ciphertext": 5}, {"ciphertext": "!!"}, "text", None):
        assert intercom.open_sealed(junk, rsa_key(1), trust).result is IntercomResult.MALFORMED
    # The sealed payload is JSON-ready and names no recipient.
    assert "target" not in json.dumps(msg.payload)
    with pytest.raises(crypto.CryptoError):
        intercom.seal(bus("x", blob="y" * 300), rsa_key(1).public_key(), None, legacy=True)
