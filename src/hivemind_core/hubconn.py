"""The hub end of one link's :class:`~hivemind_bus_client.protocol.connection.Connection`.

:meth:`hivemind_core.node.HubNode.new_connection` builds every satellite
link's connection here, whatever the transport: the hub's keys and settings,
the client row's password and pre-shared key, the v3 settings of rows that
may use it, and the per-client memory of used handshake IVs.
"""

from __future__ import annotations

from typing import Any

from hivemind_bus_client.protocol.connection import Connection, Role

__all__ = ["hub_connection"]


def hub_connection(node: Any, client: Any, *, v3: bool = True) -> Connection:
    """The hub end of a link for ``client``'s record on ``node`` (a ``HubNode``).

    With ``v3`` (transports that carry it), a row with a password is offered
    v3 as well as v1 (``NoiseHub.settings_for``).
    """
    cfg = node.config
    conn = Connection(
        Role.HUB,
        password=getattr(client, "password", None) or None,
        crypto_key=getattr(client, "crypto_key", None) or None,
        private_key=node.private_key,
        encodings=cfg.allowed_encodings,
        ciphers=cfg.allowed_ciphers,
        binarize=cfg.binarize,
        prefer_own_order=cfg.prefer_hub_order,
        node_id=node.node_id,
        handshake_timeout=cfg.handshake_timeout,
        max_size=cfg.max_frame_size,
        max_inflated=cfg.max_inflated,
        allow_v0=cfg.allow_v0,
        v3=node.noise.settings_for(client, node.node_id) if v3 else None,
    )
    client_id = getattr(client, "client_id", None)
    if isinstance(client_id, int):
        conn.fresh_iv = node.handshake_ivs.checker(client_id)
    return conn
