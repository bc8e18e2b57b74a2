"""A hub's upstream link speaks v3 to a v3-only master, with the key file and pins it is given."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from hivemind_bus_client import crypto
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.protocol.noise import public_key as x25519_public
from hivemind_core.agents.embedded import EmbeddedAgent
from hivemind_core.config import HubConfig, UpstreamConfig
from hivemind_core.database import open_database
from hivemind_core.server import HubServer
from hivemind_core.upstream import UpstreamLink

from .fakehub import Account
from .v3fakehub import V3FakeHub

PASSWORD = "relay password for the v3 master"


def test_upstream_v3_uses_the_given_key_file_and_identity(tmp_path: Path) -> None:
    key_file = tmp_path / "hub" / "relay_noise.key"
    ident = NodeIdentity(tmp_path / "hub" / "_identity.json")

    async def main(master: V3FakeHub) -> tuple[str, int]:
        with tempfile.TemporaryDirectory(prefix="v3-upstream-") as tmp:
            cfg = HubConfig(host="127.0.0.1", port=0, db_path=str(Path(tmp) / "c.db"))
            db = open_database(cfg, backend="sqlite", path=cfg.db_path)
            server = HubServer(cfg, db, EmbeddedAgent(cfg), private_key=crypto.create_private_key())
            await server.start()
            upstream = UpstreamConfig(
                host="127.0.0.1", port=master.port, key="relay-key", password=PASSWORD
            )
            link = UpstreamLink(server, upstream, noise_key_path=key_file, identity=ident)
            try:
                await link.start()
                await asyncio.wait_for(link.linked.wait(), 10)
                engine = link.engine
                assert engine is not None and engine.handshake is not None
                pattern = engine.handshake.pattern
                derivations = link._v3.derivations if link._v3 else -1
            finally:
                await link.stop()
                await server.stop()
                db.close()
        return pattern, derivations

    with V3FakeHub([Account("relay-key", PASSWORD)]) as master:
        assert asyncio.run(main(master)) == ("XXpsk2", 1)
        assert len(key_file.read_text()) == 64
        assert master.client_pins["relay-key"] == x25519_public(bytes.fromhex(key_file.read_text()))
        pins = json.loads(ident.path.read_text())["pinned_noise_keys"]
        assert pins == {f"127.0.0.1:{master.port}": x25519_public(master.hub_static).hex()}
        # A second hub process: the same files, so KK.
        assert asyncio.run(main(master))[0] == "KKpsk0"
        assert master.patterns == ["XXpsk2", "KKpsk0"]
        assert not master.errors, master.errors[0]
