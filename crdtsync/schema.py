"""Feature and flag definitions: what each field is, who may write it, where it may live.

A :class:`Schema` is a set of definitions. Each definition names a field, its CRDT type
(with parameters), its consistency policy, the roles that may write it, the regions it
may live in, a description and a version. Definitions replicate like everything else: a replica
publishes its schema as events on the reserved field ``_schema`` (an LWW register per
definition name holding :meth:`Definition.to_dict`), so a replica that receives data for
a field it was not configured with learns the definition from the log.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .policy import Eventual, Policy
from .types._base import CRDT, decode_any, registered_types

__all__ = ["Definition", "Feature", "Flag", "Schema", "SCHEMA_FIELD"]

#: reserved field carrying definitions
SCHEMA_FIELD = "_schema"

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,127}$")

TypeLike = type[CRDT[Any]] | Callable[[], CRDT[Any]]


def _template(t: TypeLike) -> CRDT[Any]:
    state = t()
    if not isinstance(state, CRDT):
        raise TypeError(f"a field type must build a crdtsync CRDT, got {type(state).__name__}")
    return state


@dataclass(frozen=True)
class Definition:
    """A replicated field.

    Args:
        name: field name (letters, digits, ``_ . : -``; starts with a letter).
        type: a CRDT class, or a zero-argument factory for a parametrized one
            (``lambda: WindowedCounter(bucket_ms=60_000, buckets=15)``).
        writers: roles allowed to write; ``None`` means any role.
        residency: regions the field may live in; ``None`` means anywhere.
        description: free text shown by ``crdtsync inspect`` and the docs.
        version: bump when the meaning changes; events carry it.
        policy: the field's consistency policy (:class:`~crdtsync.policy.Strong`,
            :class:`~crdtsync.policy.Eventual` (default) or
            :class:`~crdtsync.policy.Tunable`).
    """

    name: str
    type: TypeLike
    writers: frozenset[str] | None = None
    residency: frozenset[str] | None = None
    description: str = ""
    version: int = 1
    kind: str = field(default="feature")
    policy: Policy = field(default_factory=Eventual)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"invalid field name {self.name!r}: use letters, digits and _ . : - , starting with a letter"
            )
        if self.version < 1:
            raise ValueError("definition versions start at 1")
        for attr in ("writers", "residency"):
            v = getattr(self, attr)
            if v is not None:
                if isinstance(v, str):
                    v = frozenset([v])
                object.__setattr__(self, attr, frozenset(v))
        if not isinstance(self.policy, Policy):
            raise TypeError(
                f"policy must be Strong(), Eventual(...) or Tunable(write=..., read=...), got {self.policy!r:.80}"
            )
        _template(self.type)  # fail early on a bad type

    def empty(self) -> CRDT[Any]:
        """A fresh empty state of this field's type."""
        return _template(self.type)

    @property
    def type_tag(self) -> str:
        return self.empty().TYPE_TAG

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "template": self.empty().encode(),
            "writers": sorted(self.writers) if self.writers is not None else None,
            "residency": sorted(self.residency) if self.residency is not None else None,
            "description": self.description,
            "version": self.version,
            "policy": self.policy.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Definition:
        template = decode_any(d["template"])
        blob = template.encode()

        def factory() -> CRDT[Any]:
            return decode_any(blob)

        return cls(
            name=d["name"],
            type=factory,
            writers=frozenset(d["writers"]) if d.get("writers") is not None else None,
            residency=frozenset(d["residency"]) if d.get("residency") is not None else None,
            description=d.get("description", ""),
            version=d.get("version", 1),
            kind=d.get("kind", "feature"),
            policy=Policy.from_dict(d["policy"]) if d.get("policy") is not None else Eventual(),
        )

    def same_as(self, other: Definition) -> bool:
        return self.to_dict() == other.to_dict()


def Feature(name: str, type: TypeLike, **kw: Any) -> Definition:
    """Define a feature field (see :class:`Definition` for the arguments)."""
    return Definition(name, type, kind="feature", **kw)


def Flag(name: str, type: TypeLike | None = None, **kw: Any) -> Definition:
    """Define a flag field; the type defaults to ``EnableWinsFlag`` if registered."""
    if type is None:
        t = registered_types().get("ewflag")
        if t is None:
            raise ValueError("give the flag type explicitly, e.g. Flag('checkout', DisableWinsFlag)")
        type = t
    return Definition(name, type, kind="flag", **kw)


class Schema:
    """An ordered collection of definitions, looked up by name."""

    def __init__(self, definitions: Iterable[Definition] = ()) -> None:
        self._defs: dict[str, Definition] = {}
        #: bumped by every add, so that users of a definition know to look it up again
        self._generation = 0
        for d in definitions:
            self.add(d)

    def add(self, d: Definition) -> None:
        if d.name.startswith("_"):
            raise ValueError("field names starting with '_' are reserved")
        old = self._defs.get(d.name)
        if old is not None and not old.same_as(d) and old.version >= d.version:
            raise ValueError(
                f"field {d.name!r} is already defined differently at version {old.version}; "
                "bump the version to change a definition"
            )
        self._defs[d.name] = d
        self._generation += 1

    def __getitem__(self, name: str) -> Definition:
        try:
            return self._defs[name]
        except KeyError:
            raise KeyError(f"no field named {name!r} in the schema (known: {sorted(self._defs)})") from None

    def get(self, name: str) -> Definition | None:
        return self._defs.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._defs

    def __iter__(self) -> Iterator[Definition]:
        return iter(self._defs.values())

    def __len__(self) -> int:
        return len(self._defs)

    def names(self) -> list[str]:
        return list(self._defs)
