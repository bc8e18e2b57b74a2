"""The hub's errors: one branch of the :class:`~hivemind_bus_client.exceptions.HiveMindError` tree.

::

    HiveMindError
    └── HubError                                  something the hub cannot do
        ├── UpstreamConfigError (ValueError)      upstream settings that cannot work
        ├── UpstreamRefused                       the master refused this hub: not retried
        ├── AgentError (RuntimeError)             an agent cannot be loaded, start or run
        ├── PluginError (ValueError)              no such plugin, or not of the right kind
        ├── BrokerUnavailable (HiveMindConnectionError)
        │                                         the MQTT broker cannot be reached or used
        └── DatabaseError                         the client database (see hivemind_core.database)
            ├── InvalidClientError (ValueError)
            ├── DuplicateClientError
            └── BackendUnavailable

The second bases keep ``except ValueError`` / ``except RuntimeError`` /
``except OSError`` written against older releases working. Every class is also
importable from where it used to live (:mod:`hivemind_core.upstream`,
:mod:`hivemind_core.agents`, :mod:`hivemind_core.database`).
"""

from __future__ import annotations

from hivemind_bus_client.exceptions import HiveMindConnectionError, HiveMindError

__all__ = [
    "AgentError",
    "BackendUnavailable",
    "BrokerUnavailable",
    "DatabaseError",
    "DuplicateClientError",
    "HubError",
    "InvalidClientError",
    "PluginError",
    "UpstreamConfigError",
    "UpstreamRefused",
]


class HubError(HiveMindError):
    """Root of the errors raised by the hub (local: never sent to a peer)."""


class UpstreamConfigError(HubError, ValueError):
    """The upstream settings cannot work (e.g. they point at this hub itself)."""


class UpstreamRefused(HubError):
    """The master refused this hub's credentials or offer: retrying cannot help."""


class AgentError(HubError, RuntimeError):
    """An agent cannot start or run (the message says what to fix)."""


class PluginError(HubError, ValueError):
    """A named plugin does not exist, cannot be imported, or is not of the expected kind."""


class BrokerUnavailable(HubError, HiveMindConnectionError):
    """The MQTT broker cannot be reached, did not answer in time, or refused the hub's login."""


class DatabaseError(HubError):
    """Base of every error the client database raises."""


class InvalidClientError(DatabaseError, ValueError):
    """A record or an argument is malformed (wrong type, reserved key, ...)."""


class DuplicateClientError(DatabaseError):
    """The access key or the client id is already taken by another client."""


class BackendUnavailable(DatabaseError):
    """The backend cannot be used: unknown name, missing package, server down, unreadable file."""
