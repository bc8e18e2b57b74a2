"""The one plugin loader: agents, binary handlers and database backends.

Plugins are classes named in the hub's configuration. A name is resolved, in
this order:

1. through ``aliases`` (old names kept working, e.g. the reference's database
   plugin names);
2. as an entry point of the group (``hivemind.agents``,
   ``hivemind.binary_handlers``, ``hivemind.databases``: what installed
   packages declare in their metadata);
3. as a built-in (used when the package's own entry points are not installed,
   e.g. running from a source tree);
4. as ``module:Class``.

The result must be a subclass of ``base``; anything else is refused with an
error that lists what is available.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from hivemind_core.errors import PluginError

__all__ = [
    "AGENT_GROUP",
    "BINARY_GROUP",
    "DATABASE_GROUP",
    "available",
    "load",
]

LOG = logging.getLogger(__name__)

#: Entry-point group of agents (what answers satellites).
AGENT_GROUP = "hivemind.agents"
#: Entry-point group of binary data handlers.
BINARY_GROUP = "hivemind.binary_handlers"
#: Entry-point group of client database backends.
DATABASE_GROUP = "hivemind.databases"


def available(group: str, builtins: Mapping[str, str] | None = None) -> list[str]:
    """The names :func:`load` accepts in ``group`` (entry points plus built-ins), sorted."""
    names = set(builtins or {})
    names.update(ep.name for ep in entry_points(group=group))
    return sorted(names)


def load(
    group: str,
    name: str,
    base: type,
    builtins: Mapping[str, str] | None = None,
    aliases: Mapping[str, str] | None = None,
    *,
    kind: str = "plugin",
    error: type[Exception] = PluginError,
) -> type[Any]:
    """The class plugin ``name`` of ``group`` names (see the module docstring for the order).

    Args:
        group: the entry-point group.
        name: entry-point name, built-in name, alias or ``module:Class``.
        base: the class the plugin must derive from.
        builtins: ``{name: "module:Class"}`` known without entry points.
        aliases: ``{old_name: name}``.
        kind: what a plugin of this group is called in error messages.
        error: the exception class raised (a subclass of the caller's family).

    Raises:
        error: unknown name, import failure, or not a subclass of ``base``.
    """
    builtins = builtins or {}
    name = (aliases or {}).get(name, name)
    target: str | None = None
    for ep in entry_points(group=group):
        if ep.name == name:
            target = ep.value
            break
    if target is None:
        target = builtins.get(name, name if ":" in name else None)
    if target is None:
        raise error(f"unknown {kind} {name!r} (available: {', '.join(available(group, builtins))})")
    module_name, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module_name.strip())
        for part in attr.strip().split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise error(f"{kind} {name!r} cannot be loaded: {exc}") from None
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise error(f"{kind} {name!r} ({obj!r}) is not a {base.__name__}")
    LOG.debug("loaded %s %s from %s", kind, name, target)
    return obj
