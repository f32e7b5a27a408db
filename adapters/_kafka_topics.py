"""Topics of a KafkaLog: created with the right partition count, or a clear typed error.

The events topic must have exactly ``settings.partitions`` partitions (a key's partition
depends on the count). A missing topic is created when ``create_topics`` is on and the
broker allows it; otherwise, or when the broker refuses, :class:`~crdtsync.errors.TopicUnavailable`
says which topic to create with how many partitions. A topic with another count is
:class:`~crdtsync.errors.TopicMismatch`. Existence is checked with a topic listing first:
some brokers (tansu) create a topic as a side effect of describing or producing to it, and
tansu drops the record that auto-created it, so the log never relies on auto-creation.
"""

from __future__ import annotations

import asyncio
from typing import Any

from crdtsync.errors import TopicMismatch, TopicUnavailable

from ._kafka_settings import KafkaSettings

__all__ = ["TopicAdmin"]

_TOPIC_ALREADY_EXISTS = 36


def _create_hint(topic: str, partitions: int, replication: int) -> str:
    return (f"create it yourself: kafka-topics.sh --create --topic {topic} --partitions {partitions} "
            f"--replication-factor {replication}")


class TopicAdmin:
    """Checks and creates the topics of one log through an aiokafka admin client."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._admin: Any = None

    @property
    def started(self) -> bool:
        """Whether :meth:`start` ran (and :meth:`close` did not since)."""
        return self._admin is not None

    async def start(self) -> None:
        """Connect the admin client (a no-op when started)."""
        if self._admin is not None:
            return
        from aiokafka.admin import AIOKafkaAdminClient

        self._admin = AIOKafkaAdminClient(**self.settings.common())
        await self._admin.start()

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def topics(self) -> set[str]:
        """The names of the topics the broker has."""
        return set(await self._admin.list_topics())

    async def partition_count(self, topic: str) -> int | None:
        """The topic's partition count, or None when it does not exist."""
        if topic not in await self.topics():
            return None
        described = await self._admin.describe_topics([topic])
        for t in described:
            if t["topic"] == topic and t["error_code"] == 0:
                return len(t["partitions"])
        return None

    async def ensure(self, topic: str, partitions: int) -> None:
        """Make sure ``topic`` exists with ``partitions`` partitions (create it if allowed)."""
        s = self.settings
        count = await self.partition_count(topic)
        if count is None:
            if not s.create_topics:
                raise TopicUnavailable(f"topic {topic} does not exist and create_topics is off; "
                                       + _create_hint(topic, partitions, s.replication_factor))
            await self._create(topic, partitions)
            count = await self._wait_created(topic)
        if count != partitions:
            raise TopicMismatch(
                f"topic {topic} has {count} partitions; this log is set to {partitions}. Open it with "
                f"partitions={count}, or use a new namespace whose topic has {partitions} partitions "
                "(a key's partition depends on the count, so an existing topic cannot be changed in place)"
            )

    async def _create(self, topic: str, partitions: int) -> None:
        from aiokafka.admin import NewTopic

        s = self.settings
        try:
            resp = await self._admin.create_topics([NewTopic(topic, partitions, s.replication_factor)])
        except Exception as exc:
            raise TopicUnavailable(f"the broker refused to create topic {topic} ({exc!r}); "
                                   + _create_hint(topic, partitions, s.replication_factor)) from exc
        for t in getattr(resp, "topic_errors", []):
            name, code, message = t[0], t[1], (t[2] if len(t) > 2 else None)
            if name == topic and code not in (0, _TOPIC_ALREADY_EXISTS):
                raise TopicUnavailable(
                    f"the broker refused to create topic {topic} (error {code}: {message}); "
                    + _create_hint(topic, partitions, s.replication_factor))

    async def _wait_created(self, topic: str, timeout: float = 10.0) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            count = await self.partition_count(topic)
            if count is not None:
                return count
            if loop.time() > deadline:
                raise TopicUnavailable(f"topic {topic} was created but is not visible after {timeout:.0f} s")
            await asyncio.sleep(0.05)
