"""The abstract client database (and, re-exported, the record and the errors).

:class:`ClientDatabase` is the contract every backend fulfils; the record
:class:`~hivemind_core.db.record.Client` is in :mod:`hivemind_core.db.record`,
the errors in :mod:`hivemind_core.errors`. The contract differs from the
reference in three deliberate ways (see docs/hub.md, admission):

* deleting a client removes it for good: no ``"revoked"`` placeholder row
  that could still authenticate;
* looking a client up by access key goes through a SHA-256 digest of the key
  and a constant-time comparison, so lookups do not leak key prefixes;
* :meth:`ClientDatabase.revision` is a cheap change counter so a running hub
  can notice permission edits made by the CLI in another process.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from types import TracebackType
from typing import Any, ClassVar

from hivemind_core.db.record import (
    DEFAULT_ALLOWED_TYPES,
    RESERVED_KEYS,
    Client,
    generate_secret,
    key_digest,
    keys_equal,
    record_json,
)
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
    "record_json",
]


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
