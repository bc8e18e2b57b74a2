"""The keys a hub trusts for PROPAGATE(BUS) injection and INTERCOM (see docs/hub.md, trusted keys)."""

from __future__ import annotations

import logging
from typing import Any

from hivemind_core.config import HubConfig

__all__ = ["hub_trusted_keys"]

LOG = logging.getLogger(__name__)


def hub_trusted_keys(config: HubConfig) -> dict[str, str]:
    """The keys a hub trusts: its identity file's ``trusted_keys``, then ``config.trusted_keys``.

    An unreadable identity file is logged by :class:`NodeIdentity` and trusts nothing.
    """
    keys: dict[str, str] = {}
    if config.identity_trust:
        from hivemind_bus_client.identity import NodeIdentity

        keys.update(NodeIdentity().trusted_keys)
    extra: Any = config.trusted_keys or {}
    if isinstance(extra, (list, tuple)):  # a bare list of PEMs in server.json
        extra = {f"key-{i}": pem for i, pem in enumerate(extra)}
    keys.update(extra)
    if keys:
        LOG.info(
            "trusting %d key(s) for PROPAGATE(BUS) and INTERCOM: %s", len(keys), ", ".join(keys)
        )
    return keys
