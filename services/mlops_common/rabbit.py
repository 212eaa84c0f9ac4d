"""The inference-log topology on RabbitMQ, declared here only: the BFF (publisher) and the log worker
(consumer) both declare it on connect, so either may start first, and their declarations always
agree (RabbitMQ refuses a redeclaration with different arguments).

    exchange (direct) --routing key = queue--> queue (quorum)
        rejected / over the delivery limit --> <exchange>.dlx (direct) --> <queue>.dlq (quorum)

and the jobs' work queue (``JOBS_QUEUE``, quorum, default exchange), declared by the BFF and the job worker.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue

from mlops_common.settings import RabbitSettings

# Deliveries after which the broker dead-letters a message by itself. The worker dead-letters bad
# records on the first delivery; this only stops a message that crashes every worker from looping
# forever. Generous, because RabbitMQ 3.x also counts a requeue after a failed S3 write (the worker
# waits for S3 to answer before it retries, so an outage costs a message one delivery, not many).
DELIVERY_LIMIT = 50
# Deliveries after which the broker drops a job message by itself: only a guard against a message that
# kills every worker before it can claim it; the row's attempts (JOB_MAX_ATTEMPTS) bound the retries.
JOB_QUEUE_DELIVERY_LIMIT = 20


@dataclass(frozen=True)
class InferenceLogTopology:
    exchange: str
    queue: str

    @classmethod
    def from_settings(cls, settings: RabbitSettings) -> InferenceLogTopology:
        return cls(settings.inference_log_exchange, settings.inference_log_queue)

    @property
    def routing_key(self) -> str:
        return self.queue

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.exchange}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dlq"


async def connect(url: str, *, connect_timeout_s: float, name: str) -> AbstractConnection:
    """``aio_pika.connect``, except that a failed attempt is closed here instead of being left to the
    garbage collector (which then schedules the close on whatever thread it runs in)."""
    connection = aio_pika.Connection(url, client_properties={"connection_name": name})
    try:
        await connection.connect(timeout=connect_timeout_s)
    except BaseException:
        with contextlib.suppress(Exception):
            await connection.close()
        raise
    return connection


async def declare_topology(
    channel: AbstractChannel, topology: InferenceLogTopology
) -> tuple[AbstractExchange, AbstractQueue, AbstractExchange]:
    """Declare (idempotently) and return the exchange, the queue and the dead-letter exchange."""
    dlx = await channel.declare_exchange(topology.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
    dlq = await channel.declare_queue(topology.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"})
    await dlq.bind(dlx, routing_key=topology.dead_letter_queue)
    exchange = await channel.declare_exchange(topology.exchange, aio_pika.ExchangeType.DIRECT, durable=True)
    queue = await channel.declare_queue(
        topology.queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": topology.dead_letter_exchange,
            "x-dead-letter-routing-key": topology.dead_letter_queue,
            # The broker confirms dead-lettering to the DLQ before it forgets the message
            # (needs reject-publish overflow; no length limit is set, so nothing is refused).
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-delivery-limit": DELIVERY_LIMIT,
        },
    )
    await queue.bind(exchange, routing_key=topology.routing_key)
    return exchange, queue, dlx


async def declare_job_queue(channel: AbstractChannel, name: str) -> AbstractQueue:
    """The work queue (quorum: survives a broker restart, counts deliveries); declared by both sides."""
    return await channel.declare_queue(
        name, durable=True, arguments={"x-queue-type": "quorum", "x-delivery-limit": JOB_QUEUE_DELIVERY_LIMIT}
    )


def job_message(job_id: str) -> aio_pika.Message:
    return aio_pika.Message(
        json.dumps({"job_id": job_id}).encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=job_id,
    )
