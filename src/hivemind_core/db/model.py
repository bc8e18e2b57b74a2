"""The client record, the abstract database and its errors.

A :class:`Client` is what the hub knows about one satellite, bridge or
sub-hub: its credentials and its permissions. The field names and defaults
follow the reference record (hub notes §2.1) so records exported by the
reference hub import without loss, and :meth:`Client.to_dict` writes the
same layout back.

:class:`ClientDatabase` is the contract every backend fulfils. It differs from
the reference in three deliberate ways (hub notes §2.2):

* deleting a client removes it for good: no ``"revoked"`` placeholder row
  that could still authenticate;
* looking a client up by access key goes through a SHA-256 digest of the key
  and a constant-time comparison, so lookups do not leak key prefixes;
* :meth:`ClientDatabase.revision` is a cheap change counter so a running hub
  can notice permission edits made by the CLI in another process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from types import TracebackType
from typing import Any, ClassVar

from hivemind_core.errors import (
    BackendUnavailable,
    DatabaseError,
    DuplicateClientError,
    InvalidClientError,
)

__all__ = [
    "DEFAULT_ALLOWED_TYPES",
    "RESERVED_KEYS",
    "BackendUnavailable",
    "Client",
    "ClientDatabase",
    "DatabaseError",
    "DuplicateClientError",
    "InvalidClientError",
    "generate_secret",
    "key_digest",
    "keys_equal",
]

LOG = logging.getLogger(__name__)

#: The default role of a new client: a voice satellite may send utterances and
#: audio-state events in and receive speech out (hub notes §2.1). Without a
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
#: reference's tombstone key, which could log in (hub notes §2.2).
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


class ClientDatabase(ABC):
    """Where the hub keeps its clients. Every backend is thread-safe.

    The hub calls these methods from its event loop (directly, or through
    ``asyncio.to_thread``), so each call must be short; the CLI calls them from
    another process at the same time. Writes bump :meth:`revision`, except
    :meth:`touch`, which only records activity.

    Subclasses implement the abstract methods; :meth:`add_client`,
    :meth:`find` and the conveniences are shared.
    """

    #: Short backend name shown by the CLI.
    backend_name: ClassVar[str] = "?"

    # ---- construction -------------------------------------------------
    @classmethod
    @abstractmethod
    def from_config(
        cls, config: Any, *, path: str | None = None, url: str | None = None
    ) -> ClientDatabase:
        """Open the backend from a :class:`~hivemind_core.config.HubConfig`.

        ``path``/``url`` override the config's ``db_path``/``redis_url``.
        """

    # ---- the contract ---------------------------------------------------
    @abstractmethod
    def _insert(self, client: Client, *, keep_id: bool) -> Client:
        """Store a new record; with ``keep_id`` False assign a fresh, never reused id.

        Raises:
            DuplicateClientError: the key (or, with ``keep_id``, the id) is taken.
        """

    @abstractmethod
    def get_client(self, client_id: int) -> Client | None:
        """The client with this id, or None."""

    @abstractmethod
    def get_client_by_api_key(self, api_key: str) -> Client | None:
        """The client holding this access key, or None (deleted clients never match)."""

    @abstractmethod
    def update_client(self, client: Client) -> None:
        """Replace the stored record with ``client`` (matched by ``client_id``).

        Raises:
            KeyError: no client has that id.
            DuplicateClientError: the new access key belongs to another client.
            InvalidClientError: a field has the wrong type.
        """

    @abstractmethod
    def delete_client(self, client_id: int) -> bool:
        """Remove a client and its credentials for good; False when it did not exist."""

    @abstractmethod
    def list_clients(self) -> list[Client]:
        """Every client, by ascending id."""

    @abstractmethod
    def touch(self, client_id: int, when: float) -> None:
        """Record activity (``last_seen``) without bumping :meth:`revision`."""

    @abstractmethod
    def revision(self) -> int:
        """A counter that changes whenever a record changes (not on :meth:`touch`).

        Cheap enough to poll every second. For sqlite and redis it is shared by
        every process using the same database.
        """

    @abstractmethod
    def close(self) -> None:
        """Release connections and files; flush pending activity."""

    # ---- shared behaviour ---------------------------------------------
    def add_client(
        self,
        name: str = "",
        api_key: str | None = None,
        password: str | None = None,
        crypto_key: str | None = None,
        **fields_: Any,
    ) -> Client:
        """Create a client; a missing access key or password is generated.

        ``fields_`` are any other :class:`Client` fields (``is_admin``,
        ``allowed_types``, ...); ``client_id`` is always assigned by the
        database. No crypto key is generated: the pre-shared key is legacy and
        the password handshake supersedes it.

        Raises:
            DuplicateClientError: the access key is already in use.
            InvalidClientError: a reserved or empty key, or a bad field.
        """
        fields_.pop("client_id", None)
        unknown = set(fields_) - set(Client.FIELD_NAMES)
        if unknown:
            raise InvalidClientError(f"unknown client fields: {', '.join(sorted(unknown))}")
        key = generate_secret() if api_key is None else api_key
        self._check_key(key)
        client = Client(
            client_id=0,
            api_key=key,
            name=name,
            password=generate_secret() if password is None else password,
            crypto_key=crypto_key,
            **fields_,
        )
        client.validate()
        return self._insert(client, keep_id=False)

    def import_client(self, client: Client) -> Client:
        """Store a record keeping its ``client_id`` (migration from another database).

        Raises:
            DuplicateClientError: the id or the key is taken.
            InvalidClientError: a reserved or empty key, or a bad field.
        """
        client.validate()
        self._check_key(client.api_key)
        if client.client_id < 1:
            raise InvalidClientError(f"client_id must be positive, not {client.client_id}")
        return self._insert(client, keep_id=True)

    def reserve_id(self, client_id: int) -> None:  # noqa: B027 - optional hook, no-op by default
        """Make sure new clients get ids above ``client_id``.

        Migration calls it for the reference's tombstoned rows, so the id of a
        deleted client is not handed to a new one. Backends that cannot do it
        may ignore it.
        """

    def find(self, id_or_key: str) -> Client | None:
        """Resolve a CLI argument: a numeric client id, else an access key."""
        text = str(id_or_key).strip()
        if text.isdigit():
            client = self.get_client(int(text))
            if client is not None:
                return client
        return self.get_client_by_api_key(text) if text else None

    def get_clients_by_name(self, name: str) -> list[Client]:
        """Every client with this friendly name."""
        return [c for c in self.list_clients() if c.name == name]

    def __iter__(self) -> Iterator[Client]:
        return iter(self.list_clients())

    def __len__(self) -> int:
        return len(self.list_clients())

    def __enter__(self) -> ClientDatabase:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @staticmethod
    def _check_key(api_key: str) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise InvalidClientError("the access key must be a non-empty string")
        if api_key in RESERVED_KEYS:
            raise InvalidClientError(f"{api_key!r} is a reserved access key")
        if ":" in api_key:
            # The websocket authorization is base64("useragent:key"), split on ':'.
            raise InvalidClientError("the access key must not contain ':'")
