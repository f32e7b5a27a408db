"""Lineage for one replica, wired up: lineage log, checkpoints, retention, model archive.

:meth:`Lineage.open` gives a replica everything explain needs, in a directory
(``<data_dir>/lineage`` by default)::

    lineage/log/           the lineage log (a LocalLog; pass lineage_log= for Kafka)
    lineage/checkpoints/   checkpoints kept for the horizon (see history.Retention)
    lineage/models/        ONNX models by sha256 (see archive.ModelArchive)
    lineage/retention.json the horizon (seconds), read by ``crdtsync compact`` too

:meth:`Lineage.predictor` builds a :class:`~crdtsync.inference.Predictor` that logs to it
(and archives its model), :meth:`Lineage.explainer` an
:class:`~crdtsync.inference.explain.Explainer` over the replica's own event log, and
:func:`open_explainer` the same from a data directory alone (the CLI's ``explain``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crdtsync.log._protocol import Log
from crdtsync.schema import Schema

from .archive import ModelArchive
from .cache import PredictionCache
from .explain import Explainer, Explanation
from .fold import Fold
from .history import Checkpoint, CheckpointStore, EventHistory, Retention
from .lineage_log import LineageLog, LineageReader
from .models import Model
from .predictor import Predictor

if TYPE_CHECKING:
    from crdtsync.replica import Replica

__all__ = ["Lineage", "explain", "open_explainer"]

#: seconds of decisions kept explainable when nothing else is configured (a week)
DEFAULT_HORIZON = 7 * 86400.0


class Lineage:
    """Lineage of one replica (see the module doc)."""

    def __init__(self, replica: Replica, directory: Path, log_: LineageLog, horizon: float) -> None:
        self.replica = replica
        self.dir = directory
        self.log = log_
        self.checkpoints = CheckpointStore(directory / "checkpoints")
        self.archive = ModelArchive(directory / "models")
        self.retention = Retention(replica, self.checkpoints, horizon)

    @classmethod
    async def open(cls, replica: Replica, directory: str | Path | None = None, *, horizon: float | None = None,
                   lineage_log: Log | None = None, **log_options: Any) -> Lineage:
        """Lineage for ``replica`` in ``directory`` (default ``<data_dir>/lineage``), keeping
        every decision of the last ``horizon`` seconds explainable. The horizon is kept in
        ``retention.json`` (``None``: the one saved there, else a week), so ``crdtsync
        compact`` honours it too."""
        if directory is None:
            if replica.data_dir is None:
                raise ValueError("an in-memory replica needs directory= for its lineage")
            directory = replica.data_dir / "lineage"
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        saved = d / "retention.json"
        if horizon is None:
            horizon = float(json.loads(saved.read_text())["horizon_s"]) if saved.exists() else DEFAULT_HORIZON
        else:
            saved.write_text(json.dumps({"horizon_s": horizon}))
        if lineage_log is None:
            from crdtsync.log.local import LocalLog

            ll = LineageLog(await LocalLog.open(d / "log"), owns_log=True, **log_options)
        else:
            ll = LineageLog(lineage_log, **log_options)
        return cls(replica, d, ll, horizon)

    def predictor(self, model: Model, *, flags: Sequence[str] = (), cache: PredictionCache | None = None,
                  tracing: Any = None) -> Predictor:
        """A predictor on this replica whose records go to this lineage log."""
        self.archive.save(model)
        return Predictor(self.replica, model, flags=flags, lineage=self.log, cache=cache, tracing=tracing)

    async def explainer(self, models: Iterable[Model] = ()) -> Explainer:
        """An explainer over this lineage log and the replica's event log (both flushed first)."""
        await self.replica.flush()
        await self.log.flush()
        fold = Fold(EventHistory(self.replica.log, self.replica.codec), self.checkpoints, self.replica.schema)
        ex = Explainer(LineageReader(self.log.log), fold, models=models, archive=self.archive)
        await ex.refresh()
        return ex

    async def checkpoint(self) -> Checkpoint:
        return await self.retention.checkpoint()

    async def compact(self, log_: Log | None = None) -> int | None:
        """Compact the replica's log, keeping what the horizon needs (see Retention)."""
        await self.log.flush()
        return await self.retention.compact(log_)

    async def close(self) -> None:
        self.retention.detach()
        await self.log.close()


async def open_explainer(data_dir: str | Path, *, models: Iterable[Model] = (), schema: Schema | None = None,
                         lineage_dir: str | Path | None = None) -> tuple[Explainer, list[Log]]:
    """An explainer from a replica's data directory alone (the replica may be running in
    another process). Returns it and the logs it opened (close them when done)."""
    from crdtsync.log.local import LocalLog

    data = Path(data_dir)
    ldir = Path(lineage_dir) if lineage_dir is not None else data / "lineage"
    if not (ldir / "log").is_dir():
        raise FileNotFoundError(f"{ldir / 'log'} holds no lineage log; give the replica's data directory")
    if not (data / "log").is_dir():
        raise FileNotFoundError(f"{data / 'log'} holds no event log; give the replica's data directory")
    # read-only use: never create, never fsync (the replica may be running and writing)
    llog = await LocalLog.open(ldir / "log", fsync="never", create=False)
    try:
        elog = await LocalLog.open(data / "log", fsync="never", create=False)
    except BaseException:
        await llog.close()
        raise
    fold = Fold(EventHistory(elog), CheckpointStore(ldir / "checkpoints"), schema)
    ex = Explainer(LineageReader(llog), fold, models=models, archive=ModelArchive(ldir / "models"))
    await ex.refresh()
    return ex, [llog, elog]


async def explain(prediction_id: str, source: Lineage | str | Path, *, models: Iterable[Model] = (),
                  strict: bool = False) -> Explanation:
    """Explain one prediction, from a replica's :class:`Lineage` or its data directory
    (see :class:`~crdtsync.inference.explain.Explainer`)."""
    if isinstance(source, Lineage):
        ex = await source.explainer(models)
        return await ex.explain(prediction_id, strict=strict, refresh=False)
    ex, logs = await open_explainer(source, models=models)
    try:
        return await ex.explain(prediction_id, strict=strict, refresh=False)
    finally:
        for lg in logs:
            await lg.close()
