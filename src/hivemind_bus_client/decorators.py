"""Decorators for small HiveMind programs (one of the samples in tests/seed/samples.json).

``with_hivemind`` gives a function a connected client and closes it when the
function returns or raises::

    @with_hivemind
    def my_service(client: HiveMessageBusClient):
        client.emit(...)

    @with_hivemind(host="ws://hub.local", key="...", password="...")
    def other(client): ...

Without arguments the client comes from the identity file, like
``HiveMessageBusClient()``. Passing a client explicitly as the first argument
(``my_service(client)``) uses that client and leaves it open.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, overload

__all__ = ["with_hivemind"]

R = TypeVar("R")


@overload
def with_hivemind(func: Callable[..., R]) -> Callable[..., R]: ...


@overload
def with_hivemind(
    func: None = None, **client_kwargs: Any
) -> Callable[[Callable[..., R]], Callable[..., R]]: ...


def with_hivemind(func: Callable[..., R] | None = None, **client_kwargs: Any) -> Any:
    """Run the decorated function with a connected ``HiveMessageBusClient`` as first argument.

    Keyword arguments (when used as ``@with_hivemind(...)``) go to the client
    constructor. The connection is closed when the function returns or raises.
    """

    def decorate(fn: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> R:
            from hivemind_bus_client.client import HiveMessageBusClient

            if args and isinstance(args[0], HiveMessageBusClient):
                return fn(*args, **kwargs)
            client = HiveMessageBusClient(**client_kwargs)
            client.connect()
            try:
                return fn(client, *args, **kwargs)
            finally:
                client.close()

        return wrapper

    if func is not None:
        return decorate(func)
    return decorate
