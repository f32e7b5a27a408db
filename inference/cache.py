"""The prediction cache: skip the model when nothing a prediction depends on changed.

Entries are keyed by (model identity: name, version, sha256, settings; entity key) and hold the outputs with the digest of
the inputs they were computed from. A change subscription on the predictor's fields
drops an entity's entries as soon as any of its inputs changes (a local write or an
applied remote event), and a lookup also compares the input digest, so an entry can only
serve the exact inputs it was computed from. A different model (another identity) never
shares entries. :attr:`PredictionCache.stats` counts hits, misses and invalidations.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .models import ModelIdentity, Outputs

if TYPE_CHECKING:
    from crdtsync.replica.subscriptions import Change

    from .predictor import Predictor

__all__ = ["PredictionCache", "CacheStats"]


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    invalidations: int = 0
    #: lookups whose entry existed but for other inputs (a change the subscription missed)
    digest_misses: int = 0
    evictions: int = 0

    @property
    def hit_rate(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0


class PredictionCache:
    """Outputs per (model, entity), invalidated by change subscriptions (see module doc)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self.stats = CacheStats()
        self._entries: OrderedDict[tuple[ModelIdentity, str], tuple[bytes, Outputs, bytes, Any]] = OrderedDict()
        self._by_key: dict[str, set[ModelIdentity]] = {}
        self._unsubscribe: list[Any] = []

    def attach(self, predictor: Predictor) -> None:
        """Watch ``predictor``'s fields on its replica (done by the predictor)."""
        self._unsubscribe.append(predictor.replica.subscribe(self._changed, predictor.fields))

    def detach(self) -> None:
        for unsub in self._unsubscribe:
            unsub()
        self._unsubscribe.clear()

    def _changed(self, change: Change) -> None:
        self.invalidate(change.key)

    def invalidate(self, key: str) -> None:
        models = self._by_key.pop(key, None)
        if models:
            for m in models:
                if self._entries.pop((m, key), None) is not None:
                    self.stats.invalidations += 1

    def clear(self) -> None:
        self.stats.invalidations += len(self._entries)
        self._entries.clear()
        self._by_key.clear()

    def get(self, model: ModelIdentity, key: str, digest: bytes) -> tuple[Outputs, bytes, tuple[int, int, int] | None] | None:
        """(outputs, output digest, the batch they were computed in) for these inputs."""
        e = self._entries.get((model, key))
        if e is None or e[0] != digest:
            if e is not None:
                self.stats.digest_misses += 1
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        return e[1], e[2], e[3]

    def put(self, model: ModelIdentity, key: str, digest: bytes, outputs: Outputs, out_digest: bytes,
            batch: tuple[int, int, int] | None = None) -> None:
        entries = self._entries
        entries[(model, key)] = (digest, outputs, out_digest, batch)
        self._by_key.setdefault(key, set()).add(model)
        while len(entries) > self.max_entries:
            (m, k), _ = entries.popitem(last=False)
            models = self._by_key.get(k)
            if models is not None:
                models.discard(m)
                if not models:
                    del self._by_key[k]
            self.stats.evictions += 1

    def __len__(self) -> int:
        return len(self._entries)
