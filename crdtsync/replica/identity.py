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
        path = data_dir / "identity.json"
        if path.exists():
            d = json.loads(path.read_text())
            ident = cls(d["name"], d["incarnation"], d.get("region", "default"), d.get("role", "default"))
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

    def save(self, data_dir: Path) -> None:
        path = data_dir / "identity.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"name": self.name, "incarnation": self.incarnation,
                                   "region": self.region, "role": self.role}, indent=1))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)


