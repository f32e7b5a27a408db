"""Replication over Kafka: lag between two replica processes, and peak throughput, beside raw aiokafka.

One tansu broker (:class:`~crdtsync.testing.kafka.TansuBroker`, loopback, started and
killed here) and, per scenario, two OS processes of this module:

* **crdtsync**: a *writer* replica process writes LWW sets of one field (through a write
  handle, ``replica.writer(field, "set")``), each to a fresh key, with the event's scheduled wall-clock time (``time.time()``) as the value, and a
  flusher task appends the queue to its KafkaLog (group commit); a *reader* replica process
  on its own KafkaLog of the same namespace subscribes to the field and notes the time of
  each remote change and its key; after the run, each change's lag is that time less the
  value it made visible (``replica.value``: each key is written once, so the value read then
  is the one delivered; read after the run so that measuring adds no work to the replica
  inside it, as the raw reader only notes times). Both processes share the host's clock,
  so that is the time from the write being due on process A to the change being visible
  on process B. The writer's keys are made before the run (the application's entities).
  Open loop: at an offered rate the value is the time the event was *due*, so a writer
  that falls behind shows as lag, not as a slower schedule.
* **raw aiokafka**: the parent then reads the records crdtsync put on its topic (their
  bytes, partition and event count), and a plain aiokafka producer process sends the same
  bytes to a fresh topic of the same partition count, with the same producer settings
  (``KafkaSettings.producer()``: acks, linger, batch size), paced by the same event
  schedule; a plain consumer process (manual assignment, the same consumer settings) reads
  them. Each raw value carries a 12-byte prefix (send time, event count), so its lag is
  send-to-consume of the record, counted once per event it carries: it does *not* include
  the time events wait to be grouped into a record, which the crdtsync lag does.

Rows: offered 1k and 10k events/s (lag p50/p99, achieved rate), and peak: the writer
writes as fast as it can (``PEAK_EVENTS`` events), rate = events / (last visible on B -
first write on A). Medians over ``REPEAT`` runs.

Run as ``python -m benchmarks --only kafka`` (``--quick``: shorter runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ._harness import progress, table

ROOT = Path(__file__).resolve().parent.parent
FIELD = "ts"
PAD = "x" * 40  # a realistic small value beside the timestamp
_RAW_HEAD = struct.Struct("<dI")  # send time, events carried


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


# -- child processes ------------------------------------------------------------------
async def _crdt_writer(bootstrap: str, ns: str, rate: float, events: int) -> dict[str, Any]:
    from crdtsync.adapters.kafka import KafkaLog

    from crdtsync import Feature, LWWRegister, Replica

    async with KafkaLog.open(bootstrap, namespace=ns, check_interval=60) as kl:
        r = await Replica.open(None, schema=[Feature(FIELD, LWWRegister)], log=kl, name="writer",
                               control=False)
        print("ready", flush=True)
        sys.stdin.readline()  # the reader is ready too
        done = False

        async def flusher() -> None:
            while not done or r.pending:
                if r.pending:
                    await r.flush()
                else:
                    await asyncio.sleep(0.0005)

        task = asyncio.get_running_loop().create_task(flusher())
        put = r.writer(FIELD, "set")  # the hot-loop write API (same events as r.write)
        keys = [f"k{i}" for i in range(events)]  # the application's entities, there before the run
        t0 = time.time()
        cpu0 = time.process_time()
        written = 0
        while written < events:
            if rate:
                due = min(events, int((time.time() - t0) * rate) + 1)
                while written < due:
                    put(keys[written], [t0 + written / rate, PAD])
                    written += 1
                await asyncio.sleep(0.001)
            else:
                for _ in range(min(500, events - written)):
                    put(keys[written], [time.time(), PAD])
                    written += 1
                while r.pending > 20_000:
                    await asyncio.sleep(0.0005)
                await asyncio.sleep(0)
        done = True
        await task
        out = {"t0": t0, "t_end": time.time(), "records": kl.stats.records_appended, "events": written,
               "cpu": time.process_time() - cpu0}
        await r.close()
        return out


async def _crdt_reader(bootstrap: str, ns: str, events: int, timeout: float) -> dict[str, Any]:
    from crdtsync.adapters.kafka import KafkaLog

    from crdtsync import Feature, LWWRegister, Replica

    seen: list[float] = []  # when each remote change was delivered, in delivery order
    keys: list[str] = []  # and its key
    async with KafkaLog.open(bootstrap, namespace=ns, check_interval=60) as kl:
        r = await Replica.open(None, schema=[Feature(FIELD, LWWRegister)], log=kl, name="reader",
                               control=False)
        got = asyncio.Event()
        cpu = [0.0, 0.0]  # process time at ready, at the last change

        def on_change(c: Any) -> None:
            if c.local:
                return
            seen.append(time.time())
            keys.append(c.key)
            if len(seen) >= events:
                cpu[1] = time.process_time()
                got.set()

        r.subscribe(on_change, [FIELD])
        print("ready", flush=True)
        cpu[0] = time.process_time()
        try:
            await asyncio.wait_for(got.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        # the lag of each change: its delivery time less the value it made visible (each
        # key is written once, so the value read now is the one delivered then); read after
        # the run, so the measuring adds nothing to the replica's work inside it
        lags = [t - r.value(FIELD, k)[0] for t, k in zip(seen, keys)]
        await r.close()
    return {"lags": lags, "t_last": seen[-1] if seen else 0.0, "distinct": len(set(keys)), "cpu": cpu[1] - cpu[0]}


async def _raw_writer(bootstrap: str, topic: str, records_file: str, rate: float) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer
    from crdtsync.adapters.kafka import KafkaSettings

    recs = json.loads(Path(records_file).read_text())  # [[partition, events, hex value], ...]
    values = [(p, n, bytes.fromhex(v)) for p, n, v in recs]
    producer = AIOKafkaProducer(**KafkaSettings(bootstrap).producer())
    await producer.start()
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.time()
    cpu0 = time.process_time()
    futures = []
    sent = 0
    for p, n, v in values:
        if rate:
            wait = t0 + (sent + n) / rate - time.time()  # the record is complete when its last event is due
            if wait > 0:
                await asyncio.sleep(wait)
        futures.append(await producer.send(topic, _RAW_HEAD.pack(time.time(), n) + v, partition=p))
        sent += n
        if len(futures) >= 1000:
            await asyncio.gather(*futures)
            futures = []
    await asyncio.gather(*futures)
    await producer.stop()
    return {"t0": t0, "events": sent, "cpu": time.process_time() - cpu0}


async def _raw_reader(bootstrap: str, topic: str, partitions: int, events: int, timeout: float) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from crdtsync.adapters.kafka import KafkaSettings

    consumer = AIOKafkaConsumer(**KafkaSettings(bootstrap).consumer())
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, 0)
    print("ready", flush=True)
    cpu0 = time.process_time()
    cpu = 0.0
    lags: list[float] = []
    count = 0
    last = 0.0
    deadline = time.time() + timeout
    while count < events and time.time() < deadline:
        got = await consumer.getmany(*tps, timeout_ms=100)
        now = time.time()
        for msgs in got.values():
            for m in msgs:
                if m.headers or len(m.value or b"") < _RAW_HEAD.size:
                    continue  # the epoch markers the topic's creation through KafkaLog placed
                sent, n = _RAW_HEAD.unpack_from(m.value)
                lags.extend([now - sent] * n)
                count += n
                last = now
                cpu = time.process_time() - cpu0
    await consumer.stop()
    return {"lags": lags, "t_last": last, "cpu": cpu}


def _child(args: list[str]) -> None:
    from crdtsync._loop import run  # the event loop crdtsync's own processes run on (uvloop if installed)

    role = args[0]
    if role == "crdt-writer":
        out = run(_crdt_writer(args[1], args[2], float(args[3]), int(args[4])))
    elif role == "crdt-reader":
        out = run(_crdt_reader(args[1], args[2], int(args[3]), float(args[4])))
    elif role == "raw-writer":
        out = run(_raw_writer(args[1], args[2], args[3], float(args[4])))
    elif role == "raw-reader":
        out = run(_raw_reader(args[1], args[2], int(args[3]), int(args[4]), float(args[5])))
    else:
        raise SystemExit(f"unknown role {role!r}")
    os.set_blocking(sys.stdout.fileno(), True)  # (uvloop may leave the pipe non-blocking: a long line would be cut)
    print(json.dumps(out), flush=True)


# -- the parent -----------------------------------------------------------------------
def _spawn(*args: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_kafka", "--child", *args], cwd=ROOT,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    if line.strip() != "ready":
        p.kill()
        raise RuntimeError(f"{args[0]} did not start: {line!r}")
    return p


def _finish(p: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, _ = p.communicate(timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"a benchmark child failed (exit {p.returncode})")
    return dict(json.loads(out.strip().splitlines()[-1]))


def _pair(reader_args: list[str], writer_args: list[str], timeout: float) -> tuple[dict[str, Any], dict[str, Any]]:
    reader = _spawn(*reader_args)
    writer = _spawn(*writer_args)
    try:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
        return _finish(reader, timeout), _finish(writer, timeout)
    finally:
        for p in (reader, writer):
            if p.poll() is None:
                p.kill()


async def _capture(bootstrap: str, ns: str) -> list[list[Any]]:
    """The records crdtsync put on ``ns``'s topic: [partition, events, hex value] each."""
    from crdtsync.adapters.kafka import KafkaLog

    from crdtsync.events import MsgpackCodec

    codec = MsgpackCodec()
    out: list[list[Any]] = []
    async with KafkaLog.open(bootstrap, namespace=ns, check_interval=60) as kl:
        async for e in kl.read(0):
            p = e.position.partition  # type: ignore[union-attr]
            out.append([p, len(codec.decode(e.payload)), e.payload.hex()])
    return out


async def _make_topic(bootstrap: str, ns: str) -> tuple[str, int]:
    from crdtsync.adapters.kafka import KafkaLog

    async with KafkaLog.open(bootstrap, namespace=ns, check_interval=60) as kl:
        return kl.topic, kl.partitions


def _scenario(bootstrap: str, rate: float, events: int, tmp: Path) -> dict[str, dict[str, float]]:
    timeout = 60 + 3 * events / (rate or 5_000)
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    rd, wr = _pair(["crdt-reader", bootstrap, ns, str(events), str(timeout)],
                   ["crdt-writer", bootstrap, ns, str(rate), str(events)], timeout + 30)
    res = {"crdtsync": _summary(rd, wr, events), }
    res["crdtsync"]["events_per_record"] = wr["events"] / max(wr["records"], 1)
    recs = asyncio.run(_capture(bootstrap, ns))
    rfile = tmp / f"{ns}.json"
    rfile.write_text(json.dumps(recs))
    topic, parts = asyncio.run(_make_topic(bootstrap, f"raw-{ns}"))
    n = sum(r[1] for r in recs)
    rd, wr = _pair(["raw-reader", bootstrap, topic, str(parts), str(n), str(timeout)],
                   ["raw-writer", bootstrap, topic, str(rfile), str(rate)], timeout + 30)
    res["raw aiokafka"] = _summary(rd, wr, n)
    rfile.unlink()
    return res


def _summary(rd: dict[str, Any], wr: dict[str, Any], events: int) -> dict[str, float]:
    lags = rd["lags"]
    steady = lags[len(lags) // 10:] or lags  # the first tenth warms up connections and caches
    span = rd["t_last"] - wr["t0"]
    return {"p50_ms": _pct(steady, 0.5) * 1e3, "p99_ms": _pct(steady, 0.99) * 1e3,
            "rate": len(lags) / span if span > 0 else 0.0, "lost": events - rd.get("distinct", len(lags)),
            # CPU per event of each process in the run (the writer to its last ack, the reader to its last event)
            "cpu_w": 1e6 * wr["cpu"] / max(events, 1), "cpu_r": 1e6 * rd["cpu"] / max(events, 1)}


def run(quick: bool = False) -> str:
    from crdtsync.testing.kafka import TansuBroker

    seconds = 3 if quick else 8
    repeat = 1 if quick else 3
    peak_events = 20_000 if quick else 60_000
    scenarios = [("1k events/s", 1_000.0, int(1_000 * seconds)), ("10k events/s", 10_000.0, int(10_000 * seconds)),
                 ("peak", 0.0, peak_events)]
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    results: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name, _, _ in scenarios}
    env = os.environ.get("CRDTSYNC_KAFKA_BOOTSTRAP")
    broker = None if env else TansuBroker()
    try:
        if broker is not None:
            broker.start()
        bootstrap = env or broker.bootstrap  # type: ignore[union-attr]
        for i in range(repeat):
            for name, rate, events in scenarios:
                progress(f"kafka: {name} ({i + 1}/{repeat})")
                results[name].append(_scenario(bootstrap, rate, events, tmp))
    finally:
        if broker is not None:
            broker.stop()

    def med(name: str, system: str, key: str) -> float:
        return statistics.median(r[system][key] for r in results[name])

    rows = []
    for name, _rate, events in scenarios:  # (CPU per event only where the processes are never idle)
        for system in ("crdtsync", "raw aiokafka"):
            lost = max(r[system]["lost"] for r in results[name])
            rows.append([name, system, f"{events:,}", f"{med(name, system, 'p50_ms'):.1f}",
                         f"{med(name, system, 'p99_ms'):.1f}", f"{med(name, system, 'rate'):,.0f}",
                         (f"{med(name, system, 'cpu_w'):.2f} / {med(name, system, 'cpu_r'):.2f}" if not _rate
                          else "-"), f"{int(lost)}"])
    epr = ", ".join(f"{name}: {med(name, 'crdtsync', 'events_per_record'):.1f}" for name, _, _ in scenarios)
    ratio = med("peak", "crdtsync", "rate") / max(med("peak", "raw aiokafka", "rate"), 1e-9)
    p99 = med("10k events/s", "crdtsync", "p99_ms")
    out = [
        "Two replica OS processes on one host through a tansu broker on loopback (writer: LWW sets "
        "of fresh keys, value = the event's due wall time; reader: subscription callback, lag = "
        "now - value), then raw aiokafka producing and consuming the same record bytes (same "
        "partitions, producer and consumer settings, event schedule) in the same run. Raw lag is "
        "send-to-consume per record, counted per event it carries (it leaves out the time events "
        "wait to be grouped into a record). Lag percentiles over all but the first tenth of the "
        f"events; medians of {repeat} run(s); 2-core VM shared with other work, so noisy.",
        "",
        table(["load", "system", "events", "lag p50 ms", "lag p99 ms", "replicated events/s",
               "CPU µs/event writer / reader", "not seen"], rows),
        "",
        f"Events per Kafka record (crdtsync's group commit): {epr}.",
        "",
        f"Targets: p99 <= 50 ms at 10k events/s: {p99:.1f} ms ({'met' if p99 <= 50 else 'missed'}); "
        f"crdtsync peak >= 0.5x raw aiokafka: {ratio:.2f}x ({'met' if ratio >= 0.5 else 'missed'}).",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=argparse.REMAINDER)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.child:
        _child(a.child)
    else:
        print(run(a.quick))
