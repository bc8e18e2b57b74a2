"""protocol/crypto.py: password envelopes, key derivation, RSA and the hybrid seal."""

from __future__ import annotations

import pytest

from hivemind_bus_client.exceptions import (
    AuthenticationFailed,
    CryptoError,
    DecodingError,
    DecryptionKeyError,
)
from hivemind_bus_client.protocol import crypto

KEY = crypto.create_private_key()
OTHER = crypto.create_private_key()


def test_a_password_envelope_proves_the_password_and_carries_its_salt() -> None:
    env = crypto.password_envelope("pw")
    assert len(env) == 48 and int(env, 16) >= 0
    assert crypto.verify_password_envelope(env, "pw")
    assert not crypto.verify_password_envelope(env, "other")
    assert crypto.envelope_iv(env) == bytes.fromhex(env[:16])
    assert crypto.password_envelope("pw") != env  # a fresh salt each time


def test_both_sides_derive_the_same_key_whatever_the_order() -> None:
    a, b = crypto.envelope_iv(crypto.password_envelope("pw")), bytes(8)
    key = crypto.derive_password_key("pw", a, b)
    assert key == crypto.derive_password_key("pw", b, a) and len(key) == 32
    assert key != crypto.derive_password_key("other", a, b)


def test_a_malformed_envelope_is_a_decoding_error() -> None:
    with pytest.raises(DecodingError):
        crypto.envelope_iv("zz")
    assert not crypto.verify_password_envelope("zz", "pw")


def test_keys_round_trip_through_pem_and_bad_pem_is_a_crypto_error() -> None:
    pem = crypto.private_key_pem(KEY)
    assert crypto.public_key_pem(crypto.load_private_key(pem)) == crypto.public_key_pem(KEY)
    assert crypto.public_key_pem(crypto.load_public_key(crypto.public_key_pem(KEY))) == (
        crypto.public_key_pem(KEY)
    )
    with pytest.raises(CryptoError):
        crypto.load_public_key("not a pem")
    with pytest.raises(CryptoError):
        crypto.load_private_key("not a pem")


def test_rsa_wrap_sign_and_the_handshake_seal() -> None:
    pub = crypto.load_public_key(crypto.public_key_pem(KEY))
    assert crypto.rsa_unwrap(KEY, crypto.rsa_wrap(pub, b"k" * 32)) == b"k" * 32
    with pytest.raises(DecryptionKeyError):
        crypto.rsa_unwrap(KEY, b"junk")
    sig = crypto.rsa_sign(KEY, b"data")
    assert crypto.rsa_verify(pub, sig, b"data") and not crypto.rsa_verify(pub, sig, b"other")
    envelope, key = crypto.rsa_seal_handshake(
        crypto.load_public_key(crypto.public_key_pem(OTHER)), KEY
    )
    assert crypto.rsa_open_handshake(envelope, OTHER, pub) == key


def test_the_hybrid_seal_opens_only_for_its_recipient_and_checks_the_sender() -> None:
    recipient = crypto.load_public_key(crypto.public_key_pem(KEY))
    sender_pub = crypto.load_public_key(crypto.public_key_pem(OTHER))
    sealed = crypto.hybrid_encrypt(b"for KEY", recipient, OTHER)
    assert crypto.hybrid_decrypt(sealed, KEY, sender_pub) == b"for KEY"
    with pytest.raises(DecryptionKeyError):
        crypto.hybrid_decrypt(sealed, OTHER)
    unsigned = crypto.hybrid_encrypt(b"anon", recipient)
    with pytest.raises(AuthenticationFailed):
        crypto.hybrid_decrypt(unsigned, KEY, sender_pub)
    with pytest.raises(DecodingError):
        crypto.hybrid_decrypt({}, KEY)
