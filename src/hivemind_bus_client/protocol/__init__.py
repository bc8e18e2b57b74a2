"""The sans-I/O protocol core shared by the client and the hub.

Nothing here opens a socket, starts a thread, sleeps or reads a clock: every
function takes bytes and values (and the current time where a deadline is
involved) and returns bytes, values, events or actions. The I/O layers
(:mod:`hivemind_bus_client.transport`, the client and the hub) drive it.

Modules: ``message`` (the message model), ``serialization`` (binary framing),
``encodings`` (the text encodings), ``encryption`` (link ciphers), ``crypto``
(key derivation, RSA, password envelopes), ``connection`` (one link's state
machine), ``router`` (routing for every node), ``intercom``, ``cascade`` and
``reconnect`` (the reconnect policy: delays and which closes are final).
"""
