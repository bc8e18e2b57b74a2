"""The hub's MQTT listener: satellites that reach the hub through an MQTT broker.

The hub binds nothing: it is one client of the broker (``aiomqtt``), as each
satellite is. Topics, payloads, the bootstrap HELLO and the ``offline``
notices are those of the ecosystem's MQTT plugin (docs/hub.md, MQTT topics):
``<prefix>/<key>/in`` (satellite to hub), ``/out`` (hub to satellite) and
``/status`` (presence, and the hub's close notices).

How a link starts. MQTT has no connection event, and in our
:class:`~hivemind_bus_client.protocol.connection.Connection` the hub speaks
first, so the satellite opens with an *unencrypted HELLO* on its ``/in``
topic. That bootstrap is the MQTT ``/connect``: the listener admits the key
(the hub's admission step), opens a fresh
:class:`~hivemind_core.links.SatelliteLink` over a :class:`BrokerChannel`
(replacing a live link of the same key: the satellite restarted), whose HELLO
and offer go out on ``/out``; from there the exchange is the websocket one.
The bootstrap itself is not fed to the protocol core; the satellite's session
reaches the hub in its encrypted HELLO after the handshake. Only an
unencrypted HELLO is a bootstrap, so the check never touches ordinary traffic.

How a link ends. A bare ``offline`` on the satellite's status topic (or its
last will) ends its link (1001); so does the hub's idle sweep. When the hub
ends a link itself it publishes ``offline <code> <reason>`` (not retained) on
that key's status topic, the close code a websocket would have carried.
Frames for a known key without a link (the hub restarted) get ``offline 1001``.

Admission is the websocket one: the lookup runs in a worker thread (at most
``max_admissions`` at once), and since the broker hides who published, the
throttle's address is the broker's: unknown keys count against it, wrong
passwords against it and the key, so a key guesser is throttled while known
keys still get in. ``max_connections`` caps the live links (``offline 1013``).

Anyone on the broker can publish anywhere, so nothing a publisher sends may
raise out of the listener: an unknown key's bootstrap is a failed
authentication (answered ``offline 1008 invalid access key``); other frames
for unknown keys, topics of the wrong shape and retained status messages are
dropped and counted (``mqtt_unknown_key``, ``mqtt_bad_topic``); an invalid
frame for a live link closes that link only.

Writes never wait (:class:`~.mqtt_channel.BrokerOutbox`). A lost broker is
reconnected with backoff; links survive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Coroutine
from typing import Any

from hivemind_bus_client.exceptions import CloseCode
from hivemind_bus_client.protocol.reconnect import backoff
from hivemind_bus_client.transport import mqtt as wire
from hivemind_bus_client.transport.mqtt import aiomqtt
from hivemind_core.admission import Admitted, Refusal, Refused
from hivemind_core.errors import BrokerUnavailable
from hivemind_core.links import SatelliteLink
from hivemind_core.listeners import Hub
from hivemind_core.listeners.mqtt_channel import BrokerChannel, BrokerOutbox

__all__ = ["DEFAULT_MQTT_USERAGENT", "BrokerChannel", "MQTTListener", "start_mqtt_listener"]

LOG = logging.getLogger(__name__)

#: Useragent of an MQTT satellite whose bootstrap HELLO names none.
DEFAULT_MQTT_USERAGENT = "HiveMindMQTTSatellite"


class MQTTListener:
    """The MQTT front end of a hub (see the module docstring).

    Args:
        server: the hub (node, admission, upkeep), e.g. a running ``HubServer``.
        broker: the broker, the hub's login there and the topic scheme.
        connect_timeout: seconds the first broker connection may take.
        max_outbox: frames queued for the broker before new ones are dropped.
        reconnect_delay: cap of the backoff between broker reconnects, seconds.
        max_admissions: admissions (client lookups) in flight at once; a
            bootstrap or stray frame past them is dropped (``mqtt_admission_busy``).
    """

    def __init__(
        self,
        server: Hub,
        broker: wire.Broker,
        *,
        connect_timeout: float = 10.0,
        max_outbox: int = 10_000,
        reconnect_delay: float = 10.0,
        max_admissions: int = 32,
    ) -> None:
        self.hub = server
        self.node = server.node
        self.broker = broker
        self.where = f"{broker.host}:{broker.port}"
        self.connect_timeout = connect_timeout
        self.max_outbox = max_outbox
        self.reconnect_delay = reconnect_delay
        self.max_admissions = max(1, max_admissions)
        #: Live links by access key.
        self.links: dict[str, SatelliteLink] = {}
        #: The throttle's address of every MQTT satellite (the broker hides theirs).
        self.source = f"mqtt:{self.where}"
        #: Admissions in flight: bootstraps by access key, stray-frame lookups.
        self._admitting: dict[str, asyncio.Task[None]] = {}
        self._strays: set[asyncio.Task[None]] = set()
        self._client: aiomqtt.Client | None = None
        self.outbox = BrokerOutbox(self.node, max_outbox, broker.qos, lambda: self._client)
        self._tasks: list[asyncio.Task[None]] = []
        node = self.node.node_id
        self.presence_topic = self.topic(node, "status") if wire.valid_level(node) else None

    def topic(self, ident: str, direction: str) -> str:
        """``<prefix>/<ident>/<direction>``."""
        return self.broker.topic(ident, direction)

    # -- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the broker and subscribe; returns once subscribed.

        Raises:
            BrokerUnavailable: the broker cannot be reached or refused the hub's login.
        """
        where = self.where
        try:
            self._client = await asyncio.wait_for(self._connect(), self.connect_timeout)
        except asyncio.TimeoutError:
            raise BrokerUnavailable(
                f"MQTT broker at {where} did not answer within {self.connect_timeout:g} s"
            ) from None
        except aiomqtt.MqttError as exc:
            raise BrokerUnavailable(f"cannot use the MQTT broker at {where}: {exc}") from None
        self.hub.upkeep.watch_idle(self.node.config.idle_timeout)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._receive(), name="hivemind-mqtt-receive"),
            loop.create_task(self.outbox.run(), name="hivemind-mqtt-publish"),
        ]
        LOG.info("HiveMind MQTT listener on broker %s, topics %s", where, self.topic("+", "in"))

    async def _connect(self) -> aiomqtt.Client:
        """One broker connection with the hub's subscriptions and presence."""
        client = self.broker.client(
            f"hivemind-hub-{uuid.uuid4().hex[:12]}", self.presence_topic, self.connect_timeout
        )
        # Publishes are pipelined on purpose: do not warn about many in flight.
        client.pending_calls_threshold = self.max_outbox
        await client.__aenter__()
        try:
            await client.subscribe(self.topic("+", "in"), qos=self.broker.qos)
            await client.subscribe(self.topic("+", "status"), qos=1)
            if self.presence_topic is not None:
                await client.publish(self.presence_topic, wire.ONLINE, qos=1, retain=True)
        except BaseException:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)
            raise
        return client

    async def close(self) -> None:
        """Close every link (1001, with a notice), say ``offline`` and leave the broker."""
        for pending in [*self._admitting.values(), *self._strays]:
            pending.cancel()
        self._admitting.clear()
        self._strays.clear()
        for link in list(self.links.values()):
            await link.aclose(CloseCode.GOING_AWAY, "hub stopping")
        self.links.clear()
        client = self._client
        if client is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.outbox.idle.wait(), 5)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self._client = None
        if client is not None:
            with contextlib.suppress(Exception):
                if self.presence_topic is not None:
                    await client.publish(self.presence_topic, wire.OFFLINE, qos=1, retain=True)
                await client.__aexit__(None, None, None)

    # -- publishing and receiving ---------------------------------------------------

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Queue one publish (never waits); dropped and counted when the outbox is full."""
        self.outbox.put(topic, payload, retain)

    def notify(self, key: str, code: int, reason: str) -> None:
        """Tell the satellite of ``key`` that it has no link (see the module docstring)."""
        self.publish(self.topic(key, "status"), wire.format_notice(code, reason))

    async def _receive(self) -> None:
        """Hand every broker message to :meth:`handle`; reconnect when the broker goes away."""
        while True:
            client = self._client
            if client is not None:
                try:
                    await wire.pump(client, self.handle)
                except aiomqtt.MqttError as exc:
                    self.node.count("mqtt_broker_lost")
                    LOG.warning("lost the MQTT broker at %s: %s", self.where, exc)
                self._client = None
            for delay in backoff(initial=0.5, max_delay=self.reconnect_delay):
                await asyncio.sleep(delay)
                try:
                    self._client = await asyncio.wait_for(self._connect(), self.connect_timeout)
                except (aiomqtt.MqttError, asyncio.TimeoutError, OSError) as exc:
                    LOG.info("MQTT broker at %s still unreachable: %s", self.where, exc)
                    continue
                LOG.info("reconnected to the MQTT broker at %s", self.where)
                break

    def handle(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """One message from the broker. Never raises: every failure is counted and logged."""
        try:
            self._handle(topic, payload, retained)
        except Exception:
            self.node.count("errors")
            LOG.exception("error handling an MQTT message on %s", topic)

    def _handle(self, topic: str, payload: bytes, retained: bool) -> None:
        head = self.topic("", "").rstrip("/") + "/"  # "<prefix>/"
        parts = topic[len(head) :].split("/") if topic.startswith(head) else []
        if len(parts) != 2 or not parts[0] or parts[1] not in ("in", "status"):
            self.node.count("mqtt_bad_topic")
            LOG.debug("dropped a message on unexpected topic %r", topic)
            return
        key, direction = parts
        if direction == "status":
            self._on_status(key, payload, retained)
            return
        hello = wire.plain_hello(payload)
        if hello is not None:
            useragent = hello.get("useragent")
            if not isinstance(useragent, str) or not useragent or len(useragent) > 128:
                useragent = DEFAULT_MQTT_USERAGENT
            self._admit(key, self._start(key, useragent))
            return
        link = self.links.get(key)
        if link is None:
            if key not in self._admitting:  # else its link is about to open
                self._admit(None, self._stray(key))
            return
        if link.closing:  # its close notice is on the way: a 1001 must not overtake it
            self.node.count("mqtt_dropped_closing")
            return
        assert isinstance(link.channel, BrokerChannel)
        link.channel.feed(wire.frame_of(payload))

    def _on_status(self, key: str, payload: bytes, retained: bool) -> None:
        """A bare, live ``offline`` ends the key's link; everything else here is presence."""
        if retained or payload.strip() != wire.OFFLINE:
            return
        link = self.links.get(key)
        if link is not None:
            self.node.count("mqtt_offline")
            self._quiet(link).close(CloseCode.GOING_AWAY, "satellite went offline")

    def _admit(self, key: str | None, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` (an admission step) in a task: lookups never block the loop.

        At most ``max_admissions`` at once, and one bootstrap per ``key`` (None:
        a stray frame, not deduplicated); more are dropped and counted.
        """
        busy = len(self._admitting) + len(self._strays) >= self.max_admissions
        if busy or (key is not None and key in self._admitting):
            work.close()
            self.node.count("mqtt_admission_busy")
            return
        task = asyncio.get_running_loop().create_task(work, name="hivemind-mqtt-admit")
        if key is None:
            self._strays.add(task)
        else:
            self._admitting[key] = task

        def done(finished: asyncio.Task[None]) -> None:
            self._strays.discard(finished)
            if key is not None and self._admitting.get(key) is finished:
                del self._admitting[key]
            if not finished.cancelled() and finished.exception() is not None:
                self.node.count("errors")
                LOG.error("MQTT admission failed", exc_info=finished.exception())

        task.add_done_callback(done)

    async def _start(self, key: str, useragent: str) -> None:
        """A bootstrap HELLO: admit ``key`` (off the loop), then open a fresh link for it.

        Unknown keys count against the broker's address, wrong passwords against
        it and the key, as a websocket's peer address and key do.
        """
        node = self.node
        admission = self.hub.admission
        verdict = await admission.check_off_loop((useragent, key), self.source, node.now())
        if isinstance(verdict, Refusal):
            if verdict.why is Refused.UNKNOWN_KEY:
                node.count("mqtt_unknown_key")
            self.notify(key, verdict.code, verdict.reason)
            return
        cap = node.config.max_connections
        live = sum(1 for k in self.links if k != key)
        if cap > 0 and live >= cap:
            node.count("refused_connection_cap")
            LOG.info("refused an MQTT link: too many connections (%d)", cap)
            self.notify(key, CloseCode.TRY_AGAIN, f"too many connections ({cap})")
            return
        old = self.links.pop(key, None)
        if old is not None:
            self._quiet(old).close(CloseCode.NORMAL, "replaced by a fresh start of the satellite")
        node.count("connections")
        node.count("mqtt_connections")
        self._open(verdict, self.source)

    def _open(self, admitted: Admitted, address: str) -> SatelliteLink:
        link = SatelliteLink(
            self.node,
            self.hub.admission,
            BrokerChannel(self, admitted.key),
            admitted,
            address,
            transport="mqtt",
            idle_timeout=self.node.config.idle_timeout,
            on_end=self._ended,
        )
        self.links[admitted.key] = link
        link.spawn()
        return link

    def _ended(self, link: SatelliteLink) -> None:
        if self.links.get(link.key) is link:
            del self.links[link.key]
        channel = link.channel
        LOG.info(
            "mqtt link %s closed: %s (%s)",
            link.peer or link.base_name,
            channel.close_reason,
            channel.close_code,
        )

    @staticmethod
    def _quiet(link: SatelliteLink) -> SatelliteLink:
        """``link``, whose end the satellite will not be told of (it left or restarted)."""
        if isinstance(link.channel, BrokerChannel):
            link.channel.notify = False
        return link

    async def _stray(self, key: str) -> None:
        """A frame for a key without a link: tell a known satellite to start again."""
        node = self.node
        try:
            client = await asyncio.to_thread(self.hub.admission.lookup, key)
        except Exception:
            node.count("errors")
            LOG.exception("client database lookup failed")
            self.notify(key, CloseCode.INTERNAL, "client database unavailable")
            return
        if client is None:
            node.count("mqtt_unknown_key")
            LOG.debug("dropped a frame for an unknown access key (%s)", wire.key_address(key))
            return
        if key in self.links:  # a bootstrap opened one meanwhile
            return
        node.count("mqtt_no_link")
        self.notify(key, CloseCode.GOING_AWAY, "no link for this key: start again")


async def start_mqtt_listener(server: Hub, **options: Any) -> MQTTListener:
    """Start the MQTT listener of ``server`` from its config's ``mqtt_*`` fields.

    Keyword arguments override them (see :class:`MQTTListener`). Stop it with
    ``await listener.close()`` before ``await server.stop()``.

    Raises:
        ValueError: no broker host in the config or the arguments.
        BrokerUnavailable: the broker cannot be reached or refused the login.
    """
    cfg = server.node.config
    settings: dict[str, Any] = {
        "host": cfg.mqtt_host,
        "port": cfg.mqtt_port,
        "prefix": cfg.mqtt_prefix,
        "username": cfg.mqtt_username,
        "password": cfg.mqtt_password,
        "tls": cfg.mqtt_tls,
    }
    for name in list(options):
        if name in settings:
            settings[name] = options.pop(name)
    if not settings["host"]:
        raise ValueError("no MQTT broker: set mqtt_host")
    listener = MQTTListener(server, wire.Broker(**settings), **options)
    await listener.start()
    return listener
