"""The node identity file: who this node is and how it reaches its hub.

The file is ``$XDG_CONFIG_HOME/hivemind/_identity.json`` (``~/.config/hivemind``
when ``XDG_CONFIG_HOME`` is unset), the same file and keys as the reference
client 0.4.4 / 0.8 (docs/client.md, "Identity file"), so an identity written by either
works with the other:

========================  ===========================================================
JSON key                  meaning
========================  ===========================================================
``name``                  display name (default ``unnamed-node``)
``access_key``            the access key sent in the ``authorization`` query
``password``              the handshake password
``site_id``               location of this node (``kitchen``, ``Büro``)
``default_master``        hub host, usually with scheme (``ws://192.168.1.10``)
``default_port``          hub port (5678)
``public_key``            PEM of this node's RSA public key (sent in HELLO)
``secret_key``            **path** of the PEM file holding the RSA private key
``trusted_keys``          alias -> PEM public key of peers this node trusts
========================  ===========================================================

Differences from the reference, on purpose: the file and the private key PEM
are written atomically with mode 0600 (they hold a password and a private
key); :class:`NodeIdentity` accepts a path as well as a dict-like object.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hivemind_bus_client.exceptions import CryptoError
from hivemind_bus_client.protocol import crypto

__all__ = ["NodeIdentity", "default_identity_path", "identity_dir", "write_private"]

LOG = logging.getLogger(__name__)

_FILE_NAME = "_identity.json"
_KEY_FILE_NAME = "HiveMindComs.pem"


def identity_dir() -> Path:
    """Folder of the identity file, read from the environment at call time."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "hivemind"


def default_identity_path() -> Path:
    """Default location of ``_identity.json``."""
    return identity_dir() / _FILE_NAME


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only (0600).

    A missing folder is created 0700. Identity, RSA key, Noise key and PSK
    cache files are all written this way.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _same_pem(a: str, b: str) -> bool:
    return "".join(a.split()) == "".join(b.split())


class NodeIdentity:
    """This node's identity, backed by the identity file.

    Args:
        identity_file: ``None`` for the default file, a path, or a dict-like
            object holding the identity (a reference ``JsonConfigXDG`` works; its
            ``path`` attribute, when present, is where :meth:`save` writes).

    Every property reads and writes the in-memory data; nothing touches the
    disk until :meth:`save`.
    """

    def __init__(self, identity_file: str | os.PathLike[str] | Mapping[str, Any] | None = None):
        self._data: dict[str, Any]
        if identity_file is None or isinstance(identity_file, (str, os.PathLike)):
            self.path = (
                Path(identity_file) if identity_file is not None else default_identity_path()
            )
            self._data = {}
            self.reload()
        else:
            path = getattr(identity_file, "path", None)
            self.path = Path(path) if path else default_identity_path()
            self._data = dict(identity_file)

    # -- persistence ---------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the file (a missing file is an empty identity).

        A file that is not valid JSON is logged and treated as empty rather than
        crashing the caller; :meth:`save` would then overwrite it.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._data = {}
            return
        try:
            data = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            LOG.error("identity file %s is not valid JSON (%s); ignoring it", self.path, exc)
            data = {}
        self._data = data if isinstance(data, dict) else {}

    def save(self) -> None:
        """Write the identity file atomically with mode 0600."""
        text = json.dumps(self._data, indent=4, ensure_ascii=False)
        write_private(self.path, text)

    def as_dict(self) -> dict[str, Any]:
        """A copy of the stored values."""
        return dict(self._data)

    # -- values ----------------------------------------------------------------------

    def _get(self, key: str) -> Any:
        return self._data.get(key)

    def _set(self, key: str, value: Any) -> None:
        if value is None:
            self._data.pop(key, None)
        else:
            self._data[key] = value

    @property
    def name(self) -> str:
        """Display name; a legacy ``key`` path gives its basename, else ``unnamed-node``."""
        name = self._get("name")
        if name:
            return str(name)
        legacy = self._get("key")
        if legacy:
            return os.path.basename(str(legacy))
        return "unnamed-node"

    @name.setter
    def name(self, value: str | None) -> None:
        self._set("name", value)

    @property
    def access_key(self) -> str | None:
        """The access key the hub knows this node by."""
        return self._get("access_key")

    @access_key.setter
    def access_key(self, value: str | None) -> None:
        self._set("access_key", value)

    @property
    def password(self) -> str | None:
        """The handshake password."""
        return self._get("password")

    @password.setter
    def password(self, value: str | None) -> None:
        self._set("password", value)

    @property
    def site_id(self) -> str | None:
        """Where this node is (``kitchen``); any Unicode text."""
        return self._get("site_id")

    @site_id.setter
    def site_id(self, value: str | None) -> None:
        self._set("site_id", value)

    @property
    def default_master(self) -> str | None:
        """The hub host, with or without ``ws://`` / ``wss://``."""
        return self._get("default_master")

    @default_master.setter
    def default_master(self, value: str | None) -> None:
        self._set("default_master", value)

    @property
    def default_port(self) -> int | None:
        """The hub port."""
        port = self._get("default_port")
        try:
            return int(port) if port not in (None, "") else None
        except (TypeError, ValueError):
            return None

    @default_port.setter
    def default_port(self, value: int | None) -> None:
        self._set("default_port", int(value) if value is not None else None)

    @property
    def public_key(self) -> str | None:
        """PEM of this node's RSA public key, or ``None``."""
        return self._get("public_key")

    @public_key.setter
    def public_key(self, value: str | None) -> None:
        self._set("public_key", value)

    @property
    def private_key(self) -> str:
        """Path of the RSA private key PEM (JSON key ``secret_key``).

        Defaults to ``<identity dir>/<name>.pem`` as in the reference.
        """
        path = self._get("secret_key")
        if path:
            return str(path)
        return str(self.path.parent / f"{self.name}.pem")

    @private_key.setter
    def private_key(self, value: str | None) -> None:
        self._set("secret_key", value)

    #: Alias under the JSON key's name.
    secret_key = private_key

    # -- keys --------------------------------------------------------------------------

    def create_keys(self, key_path: str | os.PathLike[str] | None = None) -> str:
        """Make a new RSA-2048 key pair and return the public PEM.

        The private key is written (0600, atomically) to ``key_path``, by default
        ``<identity dir>/HiveMindComs.pem``; ``secret_key`` and ``public_key`` are
        updated. Like the reference, this does not :meth:`save` the identity.
        """
        key = crypto.create_private_key()
        path = Path(key_path) if key_path is not None else self.path.parent / _KEY_FILE_NAME
        write_private(path, crypto.private_key_pem(key))
        self.private_key = str(path)
        self.public_key = crypto.public_key_pem(key)
        return self.public_key

    def load_private_key(self) -> crypto.PrivateKey | None:
        """The RSA private key from :attr:`private_key`, or ``None`` if absent or unreadable."""
        path = Path(self.private_key)
        try:
            pem = path.read_bytes()
        except OSError:
            return None
        try:
            return crypto.load_private_key(pem)
        except CryptoError as exc:
            LOG.warning("private key %s is unusable: %s", path, exc)
            return None

    # -- trusted peers ---------------------------------------------------------------

    @property
    def trusted_keys(self) -> dict[str, str]:
        """Alias -> PEM public key of the peers this node trusts (a copy)."""
        keys = self._get("trusted_keys")
        return dict(keys) if isinstance(keys, dict) else {}

    def add_trusted_key(self, alias: str, pubkey: str) -> bool:
        """Trust ``pubkey`` under ``alias``; ``False`` if that exact entry already exists.

        A value that is not a PEM RSA public key is stored anyway (the seed
        docs' example uses a placeholder) but logged, since it can never match
        a real signature.
        """
        try:
            crypto.load_public_key(pubkey)
        except CryptoError:
            LOG.warning("trusted key %r is not a PEM RSA public key; it will match nothing", alias)
        keys = self.trusted_keys
        if alias in keys and _same_pem(keys[alias], pubkey):
            return False
        keys[alias] = pubkey
        self._data["trusted_keys"] = keys
        return True

    def remove_trusted_key(self, alias: str) -> bool:
        """Stop trusting ``alias``; ``False`` if it was not trusted."""
        keys = self.trusted_keys
        if alias not in keys:
            return False
        del keys[alias]
        self._data["trusted_keys"] = keys
        return True

    def is_trusted_key(self, pubkey: str | None) -> bool:
        """True when ``pubkey`` is one of the trusted keys (whitespace-insensitive)."""
        return self.get_trusted_alias(pubkey) is not None

    def get_trusted_alias(self, pubkey: str | None) -> str | None:
        """The alias of a trusted ``pubkey``, or ``None``."""
        if not pubkey:
            return None
        for alias, pem in self.trusted_keys.items():
            if isinstance(pem, str) and _same_pem(pem, pubkey):
                return alias
        return None

    def __repr__(self) -> str:
        # Never show the password or the access key.
        return (
            f"NodeIdentity(path={str(self.path)!r}, name={self.name!r}, site_id={self.site_id!r})"
        )
