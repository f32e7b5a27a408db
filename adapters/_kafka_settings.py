"""Settings of a :class:`~crdtsync.adapters.kafka.KafkaLog`, and how they map onto aiokafka.

One frozen dataclass, checked when it is made (a bad setting is a ``ValueError`` naming it),
with the producer, consumer and admin keyword arguments derived from it in one place so the
security settings (SASL PLAIN / SCRAM, TLS) reach every client the log opens.
"""

from __future__ import annotations

import ssl
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

__all__ = ["COMPRESSIONS", "KafkaSettings"]

#: compression codecs the producer accepts (``None``: none); lz4, zstd and snappy need cramjam
COMPRESSIONS = (None, "gzip", "lz4", "zstd", "snappy")
_SASL = (None, "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: room a record needs in a request beyond its payload (batch header, record header, marker headers)
RECORD_OVERHEAD = 256


@dataclass(frozen=True)
class KafkaSettings:
    """How a KafkaLog reaches its broker and lays out its topics.

    ``namespace`` and ``scope`` name the topic ``<namespace>.events.<scope>`` (and the dead
    letters ``<namespace>.dlq``); ``partitions`` is the partition count the topic must have
    (checked at open); ``strong_fields`` are the fields whose records go to partition 0, so
    its order is the SEQUENCED order (sequenced operations always do). The control channel
    (heartbeats, anti-entropy digests) is ``<namespace>.control`` with ``control_partitions``
    partitions (:class:`~crdtsync.adapters.kafka.KafkaControl`), shared by every scope.
    """

    bootstrap_servers: str
    namespace: str = "crdtsync"
    scope: str = "global"
    regions: Collection[str] | None = None
    partitions: int = 3
    strong_fields: Collection[str] = ()
    create_topics: bool = True
    replication_factor: int = 1
    # producer
    acks: str = "all"
    linger_ms: int = 2
    max_batch_size: int = 16384
    compression: str | None = None
    max_request_size: int = 1024 * 1024
    request_timeout_ms: int = 30_000
    # consumer
    fetch_max_wait_ms: int = 10
    # security, passed to every client as is
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = None
    # broker data loss
    check_interval: float = 2.0
    # dead letters
    dead_letters: bool = True
    # the control channel (heartbeats, digests): partitions of <namespace>.control
    control_partitions: int = 4

    def __post_init__(self) -> None:
        if not self.bootstrap_servers:
            raise ValueError("bootstrap_servers is empty; give host:port of a Kafka broker")
        for name in ("namespace", "scope"):
            value = getattr(self, name)
            if not value or any(c not in _TOPIC_CHARS for c in value):
                raise ValueError(f"{name}={value!r}: use letters, digits, '.', '_' and '-' only")
        if self.partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {self.partitions}")
        if self.control_partitions < 1:
            raise ValueError(f"control_partitions must be >= 1, got {self.control_partitions}")
        if self.acks != "all":
            raise ValueError(f"acks={self.acks!r}: crdtsync needs acks='all' (an ack from every in-sync replica)")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression={self.compression!r}: choose one of {COMPRESSIONS}")
        if self.sasl_mechanism not in _SASL:
            raise ValueError(f"sasl_mechanism={self.sasl_mechanism!r}: choose one of {_SASL}")
        if self.security_protocol not in _PROTOCOLS:
            raise ValueError(f"security_protocol={self.security_protocol!r}: choose one of {_PROTOCOLS}")
        if self.max_request_size <= RECORD_OVERHEAD:
            raise ValueError(f"max_request_size must exceed {RECORD_OVERHEAD} bytes")
        if self.linger_ms < 0 or self.max_batch_size < 1 or self.check_interval <= 0:
            raise ValueError("linger_ms >= 0, max_batch_size >= 1 and check_interval > 0 are required")
        if self.compression in ("lz4", "zstd", "snappy"):
            from aiokafka import codec

            if not codec.has_lz4():
                raise ValueError(f"compression={self.compression!r} needs cramjam: pip install 'crdtsync[kafka]'")

    @property
    def topic(self) -> str:
        return f"{self.namespace}.events.{self.scope}"

    @property
    def dlq_topic(self) -> str:
        return f"{self.namespace}.dlq"

    @property
    def control_topic(self) -> str:
        """The control channel's topic (:class:`~crdtsync.adapters.kafka.KafkaControl`)."""
        return f"{self.namespace}.control"

    @property
    def max_record_bytes(self) -> int:
        """The largest record an append accepts (``RecordTooLarge`` above it)."""
        return self.max_request_size - RECORD_OVERHEAD

    def common(self) -> dict[str, Any]:
        """Connection and security keyword arguments for every aiokafka client."""
        kw: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "request_timeout_ms": self.request_timeout_ms,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism is not None:
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_plain_username
            kw["sasl_plain_password"] = self.sasl_plain_password
        if self.ssl_context is not None:
            kw["ssl_context"] = self.ssl_context
        return kw

    def producer(self) -> dict[str, Any]:
        return {
            **self.common(),
            "acks": "all",  # explicitly: aiokafka's default is 1
            "linger_ms": self.linger_ms,
            "max_batch_size": self.max_batch_size,
            "compression_type": self.compression,
            "max_request_size": self.max_request_size,
            "enable_idempotence": False,  # not needed (apply is idempotent by dot); tansu lacks it
        }

    def consumer(self) -> dict[str, Any]:
        return {
            **self.common(),
            "group_id": None,  # manual assignment, never a consumer group
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "fetch_max_wait_ms": self.fetch_max_wait_ms,
            "max_partition_fetch_bytes": max(self.max_request_size, 1024 * 1024),
            "fetch_max_bytes": max(self.max_request_size * 2, 52428800),
        }


_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
