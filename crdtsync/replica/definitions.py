"""Field definitions a replica knows: its own schema and those learned from the log.

Definitions are events too (the reserved ``_schema`` field): an admin replica publishes
the definitions of its schema, and every replica learns the ones it does not have in code,
so a replica reopened without its schema, or one serving a field it never declared, still
enforces residency, writers and policy. ``admins`` names the roles allowed to publish
definitions and remove replicas (``None``: any role).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..errors import BadInput
from ..schema import Definition, Schema
from .stats import ReplicaStats

__all__ = ["Definitions"]

log = logging.getLogger("crdtsync.replica")


class Definitions:
    """The schema in code plus the definitions learned from the log."""

    def __init__(self, schema: Schema, stats: ReplicaStats, admins: Iterable[str] | None = None) -> None:
        self.schema = schema
        self.remote: dict[str, Definition] = {}
        #: roles that may publish definitions and remove replicas (None: any role)
        self.admins: frozenset[str] | None = frozenset(admins) if admins is not None else None
        self._stats = stats
        self._learned = 0  # bumped whenever a definition is learned
        #: called when a definition is learned (cached write permissions go stale)
        self.on_learn: Callable[[], None] = lambda: None

    @property
    def generation(self) -> tuple[int, int]:
        """Changes whenever the set of definitions does (caches keyed on it stay valid)."""
        return (self.schema._generation, self._learned)

    def find(self, fname: str) -> Definition | None:
        return self.schema.get(fname) or self.remote.get(fname)

    def get(self, fname: str) -> Definition:
        d = self.find(fname)
        if d is None:
            raise KeyError(f"no field named {fname!r} in this replica's schema (known: {self.schema.names()})")
        return d

    def __iter__(self) -> Iterator[Definition]:
        yield from self.schema
        yield from self.remote.values()

    def is_admin(self, role: str) -> bool:
        return self.admins is None or role in self.admins

    def learn(self, d: Any) -> None:
        """Learn a definition read from the log (malformed ones are counted and ignored;
        one already known, unchanged, changes nothing)."""
        if d is None:  # an unset register: nothing published
            return
        try:
            if not isinstance(d, dict):
                raise TypeError(f"a definition is a dict, got {type(d).__name__}")
            definition = Definition.from_dict(d)
        except (BadInput, KeyError, TypeError, ValueError) as exc:
            self._stats.reject("bad_definition")
            log.warning("ignoring a malformed definition: %s", exc)
            return
        known = self.remote.get(definition.name)
        if known is not None and known.same_as(definition):
            return  # read again (a replay, a recovery): cached write permissions stay valid
        if definition.name not in self.schema:
            self.remote[definition.name] = definition
            self._learned += 1
            self.on_learn()
