"""Redis backend: several hub processes (or machines) sharing one client database.

Keys, all under ``<prefix>`` (``HubConfig.redis_prefix``, default ``hivemind``)::

    <prefix>:client:<id>     the record as JSON (without last_seen)
    <prefix>:key:<sha256>    access-key digest -> id (the authentication index)
    <prefix>:digests         hash id -> key digest (to drop the index on change/delete)
    <prefix>:ids             sorted set of ids
    <prefix>:last_seen       hash id -> last_seen
    <prefix>:id_seq          last assigned id (INCR; ids are never reused)
    <prefix>:revision        change counter (INCR on every write but touch)

Every write is one Lua script, so it is atomic against other hubs and the
CLI. The scripts touch keys they compute from the prefix, so this backend
needs a single Redis server (or a cluster with all keys in one slot via a
``{hash tag}`` in the prefix).

The ``redis`` package is imported lazily: installing ``hivemind-mesh[redis]``
is only needed when this backend is used.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

from hivemind_core.db.model import (
    BackendUnavailable,
    Client,
    ClientDatabase,
    DatabaseError,
    DuplicateClientError,
    key_digest,
    keys_equal,
    record_json,
)

__all__ = ["RedisDatabase"]

LOG = logging.getLogger(__name__)

T = TypeVar("T")

_INSERT = """
local p, id, digest, record, seen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('EXISTS', p..':key:'..digest) == 1 then return redis.error_reply('DUPKEY') end
if id == '' then
  id = tostring(redis.call('INCR', p..':id_seq'))
else
  if redis.call('EXISTS', p..':client:'..id) == 1 then return redis.error_reply('DUPID') end
  local seq = tonumber(redis.call('GET', p..':id_seq') or '0')
  if tonumber(id) > seq then redis.call('SET', p..':id_seq', id) end
end
redis.call('SET', p..':key:'..digest, id)
redis.call('HSET', p..':digests', id, digest)
redis.call('SET', p..':client:'..id, record)
redis.call('ZADD', p..':ids', tonumber(id), id)
redis.call('HSET', p..':last_seen', id, seen)
redis.call('INCR', p..':revision')
return id
"""

_UPDATE = """
local p, id, digest, record, seen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local old = redis.call('HGET', p..':digests', id)
if not old then return redis.error_reply('NOTFOUND') end
if old ~= digest then
  if redis.call('EXISTS', p..':key:'..digest) == 1 then return redis.error_reply('DUPKEY') end
  redis.call('DEL', p..':key:'..old)
  redis.call('SET', p..':key:'..digest, id)
  redis.call('HSET', p..':digests', id, digest)
end
redis.call('SET', p..':client:'..id, record)
redis.call('HSET', p..':last_seen', id, seen)
redis.call('INCR', p..':revision')
return 1
"""

_DELETE = """
local p, id = ARGV[1], ARGV[2]
local old = redis.call('HGET', p..':digests', id)
if not old then return 0 end
redis.call('DEL', p..':key:'..old, p..':client:'..id)
redis.call('HDEL', p..':digests', id)
redis.call('HDEL', p..':last_seen', id)
redis.call('ZREM', p..':ids', id)
redis.call('INCR', p..':revision')
return 1
"""

_TOUCH = """
local p, id, seen = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HEXISTS', p..':digests', id) == 1 then redis.call('HSET', p..':last_seen', id, seen) end
return 1
"""

_RESERVE = """
local p, id = ARGV[1], tonumber(ARGV[2])
local seq = tonumber(redis.call('GET', p..':id_seq') or '0')
if id > seq then redis.call('SET', p..':id_seq', id) end
return 1
"""


def _guard(method: Callable[..., T]) -> Callable[..., T]:
    """Translate connection failures into :class:`BackendUnavailable`."""

    @functools.wraps(method)
    def wrapper(self: RedisDatabase, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except self._redis_errors as exc:
            raise BackendUnavailable(f"redis at {self.url_redacted}: {exc}") from None

    return wrapper


class RedisDatabase(ClientDatabase):
    """Client database on a Redis server (see the module docstring)."""

    backend_name = "redis"

    def __init__(
        self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "hivemind", client: Any = None
    ) -> None:
        """Connect to ``url`` (checked with a PING).

        Args:
            url: a ``redis://`` / ``rediss://`` / ``unix://`` URL.
            prefix: key prefix, so several hives can share one server.
            client: an existing ``redis.Redis`` (tests, custom pools).

        Raises:
            BackendUnavailable: the ``redis`` package is missing or the server does not answer.
        """
        try:
            import redis
        except ImportError:
            raise BackendUnavailable(
                "the redis backend needs the 'redis' package: pip install 'hivemind-mesh[redis]'"
            ) from None
        self.prefix = prefix
        self.url_redacted = _redact(url)
        self._redis_errors: tuple[type[BaseException], ...] = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
        )
        self._response_error = redis.exceptions.ResponseError
        try:
            self._r = client or redis.Redis.from_url(
                url, decode_responses=True, socket_connect_timeout=5, socket_timeout=5
            )
            self._r.ping()
        except (ValueError, *self._redis_errors) as exc:
            raise BackendUnavailable(f"cannot reach redis at {self.url_redacted}: {exc}") from None
        self._insert_script = self._r.register_script(_INSERT)
        self._update_script = self._r.register_script(_UPDATE)
        self._delete_script = self._r.register_script(_DELETE)
        self._touch_script = self._r.register_script(_TOUCH)
        self._reserve_script = self._r.register_script(_RESERVE)

    @classmethod
    def from_config(
        cls, config: Any, *, path: str | None = None, url: str | None = None
    ) -> RedisDatabase:
        """Connect to ``url``, else ``config.redis_url``; prefix from ``config.redis_prefix``."""
        return cls(
            str(url or getattr(config, "redis_url", None) or "redis://127.0.0.1:6379/0"),
            prefix=getattr(config, "redis_prefix", "hivemind") or "hivemind",
        )

    # ---- helpers ------------------------------------------------------
    def _k(self, *parts: object) -> str:
        return ":".join([self.prefix, *map(str, parts)])

    @staticmethod
    def _to_client(client_id: int, record: str, seen: str | None) -> Client:
        data = json.loads(record)
        data["client_id"] = client_id
        data["last_seen"] = float(seen) if seen is not None else -1.0
        return Client.from_dict(data)

    def _run(self, script: Any, *args: object) -> Any:
        try:
            return script(args=[self.prefix, *args])
        except self._response_error as exc:
            text = str(exc)
            if "DUPKEY" in text:
                raise DuplicateClientError("that access key is already in use") from None
            if "DUPID" in text:
                raise DuplicateClientError(f"client id {args[0]} is already in use") from None
            if "NOTFOUND" in text:
                raise KeyError(args[0]) from None
            raise DatabaseError(f"redis: {text}") from None

    # ---- contract -----------------------------------------------------
    @_guard
    def _insert(self, client: Client, *, keep_id: bool) -> Client:
        new_id = self._run(
            self._insert_script,
            str(client.client_id) if keep_id else "",
            key_digest(client.api_key),
            record_json(client),
            repr(client.last_seen),
        )
        client.client_id = int(new_id)
        return client

    @_guard
    def get_client(self, client_id: int) -> Client | None:
        cid = int(client_id)
        pipe = self._r.pipeline(transaction=False)
        pipe.get(self._k("client", cid))
        pipe.hget(self._k("last_seen"), cid)
        record, seen = pipe.execute()
        return self._to_client(cid, record, seen) if record is not None else None

    @_guard
    def get_client_by_api_key(self, api_key: str) -> Client | None:
        if not isinstance(api_key, str) or not api_key:
            return None
        cid = self._r.get(self._k("key", key_digest(api_key)))
        if cid is None:
            return None
        client = self.get_client(int(cid))
        if client is None or not keys_equal(client.api_key, api_key):
            return None
        return client

    @_guard
    def update_client(self, client: Client) -> None:
        client.validate()
        self._check_key(client.api_key)
        self._run(
            self._update_script,
            str(client.client_id),
            key_digest(client.api_key),
            record_json(client),
            repr(client.last_seen),
        )

    @_guard
    def delete_client(self, client_id: int) -> bool:
        return bool(self._run(self._delete_script, str(int(client_id))))

    @_guard
    def list_clients(self) -> list[Client]:
        ids = [int(i) for i in cast("list[bytes]", self._r.zrange(self._k("ids"), 0, -1))]
        if not ids:
            return []
        records = self._r.mget([self._k("client", i) for i in ids])
        seen = cast("dict[str, str]", self._r.hgetall(self._k("last_seen")))
        return [
            self._to_client(cid, record, seen.get(str(cid)))
            for cid, record in zip(ids, records, strict=True)
            if record is not None
        ]

    @_guard
    def __len__(self) -> int:
        return int(self._r.zcard(self._k("ids")))

    @_guard
    def touch(self, client_id: int, when: float) -> None:
        self._run(self._touch_script, str(int(client_id)), repr(float(when)))

    @_guard
    def revision(self) -> int:
        value = self._r.get(self._k("revision"))
        return int(value) if value is not None else 0

    @_guard
    def reserve_id(self, client_id: int) -> None:
        self._run(self._reserve_script, str(int(client_id)))

    def close(self) -> None:
        try:
            self._r.close()
        except self._redis_errors as exc:  # pragma: no cover
            LOG.debug("closing redis: %s", exc)


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':***' if ':' in creds else '***'}@{host}"
