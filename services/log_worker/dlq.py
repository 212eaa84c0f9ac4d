"""``python -m log_worker.dlq list|replay|purge``: the inference-log dead-letter queue.

- ``list``: how many records wait there, by reason kind, and the first ``--limit`` with their reasons
  (a record each, as a JSON line, but for a block that did not decode: its whole message).
  The messages are returned to the queue (on RabbitMQ 4, a quorum queue counts each return as a
  delivery).
- ``replay``: republish them to the inference-log exchange (confirmed), then remove them; once the
  cause is fixed, the worker writes them. Records the table already holds stay one row each (the
  worker merges on request id); a record still invalid comes back here. At most the messages present
  when it starts are replayed, so nothing loops.
- ``purge --yes``: delete them all.

Connection and names come from the worker's settings (``RABBITMQ_URL``, ``INFERENCE_LOG_EXCHANGE``,
``INFERENCE_LOG_QUEUE``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

from log_worker.settings import Settings
from log_worker.worker import ERROR_HEADER, ERROR_KIND_HEADER
from mlops_common.inference_log_wire import BLOCKS_CONTENT_TYPE
from mlops_common.rabbit import InferenceLogTopology, connect, declare_topology

_PREVIEW_CHARS = 160


async def _open(settings: Settings) -> tuple[aio_pika.abc.AbstractConnection, AbstractChannel, AbstractQueue]:
    connection = await connect(
        settings.rabbitmq_url.get_secret_value(), connect_timeout_s=settings.connect_timeout_s, name="dlq tool"
    )
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    topology = InferenceLogTopology.from_settings(settings)
    await declare_topology(channel, topology)
    dlq = await channel.declare_queue(topology.dead_letter_queue, passive=True)
    return connection, channel, dlq


def _header(message: aio_pika.abc.AbstractIncomingMessage, name: str) -> str:
    value = (message.headers or {}).get(name, "")
    return value.decode() if isinstance(value, bytes) else str(value)


async def list_dead_letters(settings: Settings, limit: int) -> int:
    connection, _, dlq = await _open(settings)
    async with connection:
        total = dlq.declaration_result.message_count
        kinds: Counter[str] = Counter()
        shown = []
        for _ in range(total):
            message = await dlq.get(no_ack=False, fail=False)
            if message is None:
                break
            kinds[_header(message, ERROR_KIND_HEADER) or "unknown"] += 1
            if len(shown) < limit:
                shown.append(message)
        print(f"{total} dead-lettered records in {dlq.name}")
        for kind, count in sorted(kinds.items()):
            print(f"  {kind}: {count}")
        for message in shown:
            body = _preview(message)
            print(f"- [{_header(message, ERROR_KIND_HEADER) or 'unknown'}] {_header(message, ERROR_HEADER)}")
            print(f"  {body}")
        # Closing the channel returns every message fetched above to the queue.
    return 0


def _preview(message: aio_pika.abc.AbstractIncomingMessage) -> str:
    if message.content_type == BLOCKS_CONTENT_TYPE:  # a block that did not decode: binary
        return f"(a message of one inference-log block, {len(message.body)} bytes of msgpack)"
    return message.body.decode(errors="replace")[:_PREVIEW_CHARS]


async def replay_dead_letters(settings: Settings, limit: int | None) -> int:
    topology = InferenceLogTopology.from_settings(settings)
    connection, channel, dlq = await _open(settings)
    async with connection:
        exchange = await channel.get_exchange(topology.exchange)
        todo = dlq.declaration_result.message_count
        if limit is not None:
            todo = min(todo, limit)
        replayed = 0
        for _ in range(todo):
            message = await dlq.get(no_ack=False, fail=False)
            if message is None:
                break
            await exchange.publish(
                aio_pika.Message(
                    message.body,
                    content_type=message.content_type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    headers={"x-replayed-from": dlq.name},
                ),
                topology.routing_key,
                mandatory=True,
            )
            # Only once the broker confirmed the copy: a crash in between leaves both (one row anyway).
            await message.ack()
            replayed += 1
        remaining = (await channel.declare_queue(dlq.name, passive=True)).declaration_result.message_count
    print(f"replayed {replayed} records from {dlq.name} to {topology.exchange}; {remaining} left in {dlq.name}")
    return 0


async def purge_dead_letters(settings: Settings) -> int:
    connection, _, dlq = await _open(settings)
    async with connection:
        result = await dlq.purge()
    print(f"purged {result.message_count} records from {dlq.name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m log_worker.dlq", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    list_parser = commands.add_parser("list", help="count the dead-lettered records by reason and show the first ones")
    list_parser.add_argument("--limit", type=int, default=10, help="records to show (default 10)")
    replay_parser = commands.add_parser("replay", help="send the dead-lettered records to the worker again")
    replay_parser.add_argument("--limit", type=int, default=None, help="replay at most N records")
    purge_parser = commands.add_parser("purge", help="delete every dead-lettered record")
    purge_parser.add_argument("--yes", action="store_true", help="confirm the deletion")
    args = parser.parse_args(argv)
    if getattr(args, "limit", None) is not None and args.limit < 0:
        parser.error(f"--limit must be 0 or more, got {args.limit}")
    if args.command == "purge" and not args.yes:
        parser.error("purge deletes every dead-lettered record: add --yes")

    settings = Settings()
    if args.command == "list":
        return asyncio.run(list_dead_letters(settings, args.limit))
    if args.command == "replay":
        return asyncio.run(replay_dead_letters(settings, args.limit))
    return asyncio.run(purge_dead_letters(settings))


if __name__ == "__main__":
    sys.exit(main())
