"""The client record: what the hub knows about one satellite, bridge or sub-hub.

The field names and defaults follow the reference record (see docs/hub.md,
permissions) so records exported by the reference hub import without loss,
and :meth:`Client.to_dict` writes the same layout back. The access-key
helpers (digest, constant-time comparison, fresh secrets) live here too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from hivemind_core.errors import InvalidClientError

__all__ = [
    "DEFAULT_ALLOWED_TYPES",
    "RESERVED_KEYS",
    "Client",
    "generate_secret",
    "key_digest",
    "keys_equal",
    "record_json",
]

LOG = logging.getLogger(__name__)

#: The default role of a new client: a voice satellite may send utterances and
#: audio-state events in and receive speech out (docs/hub.md, permissions). Without a
#: role every utterance would be dropped, which users hit with later
#: deny-by-default releases.
DEFAULT_ALLOWED_TYPES: tuple[str, ...] = (
    "recognizer_loop:utterance",
    "recognizer_loop:record_begin",
    "recognizer_loop:record_end",
    "recognizer_loop:audio_output_start",
    "recognizer_loop:audio_output_end",
    "recognizer_loop:b64_transcribe",
    "speak:b64_audio",
    "ovos.common_play.SEI.get.response",
)

#: Access keys that can never be given to a client. ``revoked`` is the
#: reference's tombstone key, which could log in (docs/hub.md, admission).
RESERVED_KEYS: frozenset[str] = frozenset({"revoked"})

_LIST_FIELDS = ("intent_blacklist", "skill_blacklist", "message_blacklist", "allowed_types")
_BOOL_FIELDS = ("is_admin", "can_broadcast", "can_escalate", "can_propagate")


def generate_secret() -> str:
    """A fresh access key or password: 16 random bytes as 32 hex digits (the reference's shape)."""
    return secrets.token_hex(16)


def key_digest(api_key: str) -> str:
    """SHA-256 hex digest of an access key: what the backends index keys by.

    Indexing the digest rather than the key means an index lookup's timing
    depends on the digest, which an attacker cannot steer towards a real key.
    """
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def keys_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two access keys."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def record_json(client: Client) -> str:
    """The stored form of a record in the shared-store backends: everything but the id
    (the key of the row) and ``last_seen`` (kept apart so ``touch`` is not an edit)."""
    data = client.to_dict()
    data.pop("client_id")
    data.pop("last_seen")
    return json.dumps(data, ensure_ascii=False, sort_keys=True)


def _str_list(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise InvalidClientError(f"{name} must be a list of strings, not {type(value).__name__}")
    out = []
    for item in value:
        if not isinstance(item, str):
            raise InvalidClientError(f"{name} must hold strings, found {type(item).__name__}")
        out.append(item)
    return out


@dataclass
class Client:
    """One client of the hub: credentials and permissions.

    ``allowed_types`` is the inbound whitelist of bus message types the client
    may inject; ``message_blacklist`` filters what the hub sends *to* it;
    ``skill_blacklist``/``intent_blacklist`` go into its OVOS session.
    ``metadata`` keeps fields of imported records this model does not know,
    so an export writes them back unchanged.
    """

    client_id: int
    api_key: str
    name: str = ""
    description: str = ""
    is_admin: bool = False
    last_seen: float = -1
    intent_blacklist: list[str] = field(default_factory=list)
    skill_blacklist: list[str] = field(default_factory=list)
    message_blacklist: list[str] = field(default_factory=list)
    allowed_types: list[str] = field(default_factory=lambda: list(DEFAULT_ALLOWED_TYPES))
    crypto_key: str | None = None
    password: str | None = None
    can_broadcast: bool = True
    can_escalate: bool = True
    can_propagate: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)

    FIELD_NAMES: ClassVar[tuple[str, ...]]

    def validate(self) -> None:
        """Check types (the reference rejects a non-int id and a non-bool admin flag too).

        Raises:
            InvalidClientError: a field has the wrong type.
        """
        if isinstance(self.client_id, bool) or not isinstance(self.client_id, int):
            raise InvalidClientError(f"client_id must be an int, not {self.client_id!r}")
        if not isinstance(self.api_key, str):
            raise InvalidClientError("api_key must be a string")
        for name in _BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise InvalidClientError(f"{name} must be a bool, not {getattr(self, name)!r}")
        for name in _LIST_FIELDS:
            setattr(self, name, _str_list(getattr(self, name), name))
        for name in ("name", "description"):
            if not isinstance(getattr(self, name), str):
                raise InvalidClientError(f"{name} must be a string")
        for name in ("crypto_key", "password"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidClientError(f"{name} must be a string or None")
        if not isinstance(self.last_seen, (int, float)) or isinstance(self.last_seen, bool):
            raise InvalidClientError("last_seen must be a number")
        self.last_seen = float(self.last_seen)
        if not isinstance(self.metadata, dict):
            raise InvalidClientError("metadata must be a dict")

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict, in the reference's field layout.

        Lists and the metadata dict are copied, so the result can be mutated
        without touching this record.
        """
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                value = list(value)
            elif isinstance(value, dict):
                value = dict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, legacy: bool = False) -> Client:
        """Build a record from a dict; unknown keys go into ``metadata``.

        Args:
            data: a dict as written by :meth:`to_dict` or by the reference hub.
            legacy: apply the reference's load-time rules to a record it wrote:
                ``null`` lists (what its ``add-client`` stores) become empty,
                an empty ``allowed_types`` becomes the default role, and
                ``recognizer_loop:utterance`` is added when missing. The
                reference applies these on every load, so the imported client
                keeps exactly the permissions it had there.

        Raises:
            InvalidClientError: a required field is missing or has the wrong type.
        """
        if not isinstance(data, Mapping):
            raise InvalidClientError("a client record must be a JSON object")
        known = set(cls.FIELD_NAMES)
        kwargs: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
        for key, value in data.items():
            if key == "metadata":
                if value is None:
                    continue
                if not isinstance(value, dict):
                    raise InvalidClientError("metadata must be a JSON object")
                metadata.update(value)
            elif key in known:
                kwargs[key] = value
            else:
                metadata[key] = value
        for required in ("client_id", "api_key"):
            if required not in kwargs:
                raise InvalidClientError(f"client record without {required}")
        if legacy:
            for name in _LIST_FIELDS:
                if kwargs.get(name) is None:
                    kwargs.pop(name, None)
            allowed = kwargs.get("allowed_types")
            if allowed is not None and not allowed:
                kwargs.pop("allowed_types")
            if (
                "allowed_types" in kwargs
                and "recognizer_loop:utterance" not in kwargs["allowed_types"]
            ):
                kwargs["allowed_types"] = [*kwargs["allowed_types"], "recognizer_loop:utterance"]
            for name in ("can_broadcast", "can_escalate", "can_propagate"):
                if kwargs.get(name) is None:
                    kwargs.pop(name, None)
            if kwargs.get("is_admin") is None:
                kwargs.pop("is_admin", None)
            if kwargs.get("last_seen") is None:
                kwargs.pop("last_seen", None)
            for name in ("name", "description"):
                if kwargs.get(name) is None:
                    kwargs.pop(name, None)
        else:
            for name in _LIST_FIELDS:
                if name in kwargs and kwargs[name] is None:
                    kwargs[name] = []
        client = cls(**kwargs, metadata=metadata)
        client.validate()
        return client

    def redacted(self) -> dict[str, Any]:
        """The record without its secrets, for logs."""
        out = self.to_dict()
        for name in ("api_key", "password", "crypto_key"):
            if out.get(name):
                out[name] = "***"
        return out


Client.FIELD_NAMES = tuple(f.name for f in fields(Client))
