"""Root of the test suite: puts ``tests/`` on the import path, so every folder
imports the shared helpers as ``support`` (``from support.net import free_port,
wait_until``), and registers the fixtures every folder may use."""

from support.mosquitto import mosquitto

__all__ = ["mosquitto"]
