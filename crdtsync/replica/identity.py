"""Who a replica is: name, incarnation, region and role, kept in its data directory.

``<data>/identity.json`` holds the replica's name, region, role and *incarnation*. The
actor id used in dots is ``name~incarnation``. A data directory created afresh gets a new
random incarnation, so a replica whose state was lost never reuses its old dots: it
rejoins as a new incarnation.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .._storage import remove_if_present, typed_storage_errors
from ..errors import CorruptRecord

__all__ = ["ReplicaIdentity"]


@dataclass(frozen=True)
class ReplicaIdentity:
    """Who a replica is: name, incarnation, region, role."""

    name: str
    incarnation: str
    region: str = "default"
    role: str = "default"

    @property
    def actor(self) -> str:
        return f"{self.name}~{self.incarnation}"

    @staticmethod
    def new(name: str, region: str = "default", role: str = "default") -> ReplicaIdentity:
        if not name or "~" in name:
            raise ValueError(f"invalid replica name {name!r} (non-empty, no '~')")
        return ReplicaIdentity(name, secrets.token_hex(4), region, role)

    @classmethod
    def load_or_create(cls, data_dir: Path, name: str | None, region: str | None, role: str | None) -> ReplicaIdentity:
        """The identity kept in ``data_dir`` (updated to a new ``region``/``role`` if
        given), or a new one saved there. Raises ``ValueError`` when the directory is
        another replica's, :class:`~crdtsync.errors.CorruptRecord` when its identity file
        is damaged, and ``StorageFull``/``StorageUnavailable`` when it cannot be saved."""
        path = data_dir / "identity.json"
        if path.exists():
            ident = cls._load(path)
            if name is not None and name != ident.name:
                raise ValueError(
                    f"{data_dir} belongs to replica {ident.name!r}, not {name!r}; use another directory"
                )
            if (region is not None and region != ident.region) or (role is not None and role != ident.role):
                ident = cls(ident.name, ident.incarnation, region or ident.region, role or ident.role)
                ident.save(data_dir)
            return ident
        ident = cls.new(name or f"replica-{secrets.token_hex(2)}", region or "default", role or "default")
        ident.save(data_dir)
        return ident

    @classmethod
    def _load(cls, path: Path) -> ReplicaIdentity:
        try:
            d = json.loads(path.read_bytes())
            ident = cls(d["name"], d["incarnation"], d.get("region", "default"), d.get("role", "default"))
            fields = (ident.name, ident.incarnation, ident.region, ident.role)
            if not all(isinstance(v, str) and v for v in fields[:3]) or not isinstance(ident.role, str):
                raise ValueError(f"name, incarnation, region and role must be strings, got {fields!r:.120}")
            if "~" in ident.name:
                raise ValueError(f"invalid replica name {ident.name!r}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSON and UTF-8 errors are ValueErrors
            raise CorruptRecord(
                f"{path} is damaged ({type(exc).__name__}: {exc}); it names this replica's incarnation. "
                "Restore it from a backup, or start the replica with a fresh data directory (it rejoins "
                "as a new incarnation and catches up from the log)"
            ) from None
        return ident

    def save(self, data_dir: Path) -> None:
        """Write ``<data_dir>/identity.json`` atomically (tmp, fsync, rename); nothing
        partial is left behind when the disk refuses it (typed ``StorageError``)."""
        path = data_dir / "identity.json"
        tmp = path.with_suffix(".tmp")
        body = json.dumps({"name": self.name, "incarnation": self.incarnation,
                           "region": self.region, "role": self.role}, indent=1)
        with typed_storage_errors(data_dir, "Saving the replica's identity", "The replica was not opened."):
            try:
                with open(tmp, "w") as f:
                    f.write(body)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                remove_if_present(tmp)
                raise
