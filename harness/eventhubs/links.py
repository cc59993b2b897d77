"""Event Hubs semantics on top of the AMQP connection layer: one ``EventHubsHandler`` per connection.

Links: ``$cbs`` and ``$management`` request/response pairs, producer links (hub or ``/Partitions/<id>``),
consumer links (``/ConsumerGroups/<cg>/Partitions/<id>`` with selector filters, epochs, runtime metrics).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from enginehub.harness.amqp.codec import Described, Symbol
from enginehub.harness.amqp.connection import AMQPConnection, ConnectionHandler, Delivery, Link
from enginehub.harness.amqp.errors import CodecError, Condition
from enginehub.harness.amqp.message import decode_message
from enginehub.harness.amqp.performatives import Accepted, Error, Rejected
from enginehub.harness.eventhubs import cbs, mgmt
from enginehub.harness.eventhubs.auth import AuthError, parse_sas_token, validate_sas_token
from enginehub.harness.eventhubs.errors import (
    EntityNotFound,
    InvalidFilter,
    ManagementError,
    Unauthorized,
)
from enginehub.harness.eventhubs.message import (
    MessageFormatError,
    delivery_bytes,
    runtime_metric_annotations,
    store_delivery,
)

if TYPE_CHECKING:
    from enginehub.harness.eventhubs.server import EventHubsEmulator
    from enginehub.harness.eventhubs.state import Hub, Partition

LOG = logging.getLogger(__name__)

EPOCH = "com.microsoft:epoch"
RUNTIME_METRIC = "com.microsoft:enable-receiver-runtime-metric"
GEOREPLICATION = "com.microsoft:georeplication"
MAX_NON_EPOCH_READERS = 5
READ_BATCH = 512
_FILTER_RE = re.compile(
    r"^\s*amqp\.annotation\.x-opt-(offset|sequence-number|enqueued-time)\s*(>=|>)\s*'([^']*)'\s*$"
)
_ACCEPTED = Accepted()


def parse_filter(expression: str) -> tuple[str, bool, str]:
    """``amqp.annotation.x-opt-offset > '12'`` -> ("offset", inclusive, "12"). Raises InvalidFilter."""
    m = _FILTER_RE.match(expression)
    if not m:
        raise InvalidFilter(f"The filter '{expression}' is not a valid amqp filter for EventHub entities.")
    return m.group(1), m.group(2) == ">=", m.group(3)


def start_sequence(partition: Partition, kind: str, inclusive: bool, value: str) -> int:
    """The first sequence number a consumer with this filter receives."""
    try:
        if kind == "offset":
            if value == "-1":
                return partition.begin_sequence_number
            if value == "@latest":
                return partition.last_sequence_number + 1
            return max(partition.sequence_at_offset(int(value), inclusive), partition.begin_sequence_number)
        if kind == "sequence-number":
            n = int(value)
            return max(n if inclusive else n + 1, partition.begin_sequence_number)
        return partition.sequence_at_time(int(value), inclusive)
    except ValueError:
        raise InvalidFilter(
            f"The filter value '{value}' of x-opt-{kind} is not valid for EventHub entities."
        ) from None


class Consumer:
    """A consumer link: its position, epoch and pump task."""

    def __init__(
        self,
        handler: EventHubsHandler,
        link: Link,
        hub: Hub,
        partition: Partition,
        group: str,
        epoch: int | None,
    ) -> None:
        self.handler = handler
        self.link = link
        self.hub = hub
        self.partition = partition
        self.group = group
        self.epoch = epoch
        self.next_seq = 0
        self.runtime_metric = False
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.hub.name.lower(), self.group.lower(), self.partition.partition_id)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._pump())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _pump(self) -> None:
        link = self.link
        partition = self.partition
        try:
            while not link.detached:
                if not link.can_send:
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                begin = partition.begin_sequence_number
                if self.next_seq < begin:
                    self.next_seq = begin
                events = partition.read(self.next_seq, min(link.credit, READ_BATCH))
                if not events and link.drain:
                    link.finish_drain()  # nothing available: give the peer's credit back now
                    continue
                if not events:
                    self.wake.clear()
                    waiter = asyncio.ensure_future(partition.wait_for(self.next_seq, 60.0))
                    woke = asyncio.ensure_future(self.wake.wait())
                    try:
                        await asyncio.wait((waiter, woke), return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        waiter.cancel()
                        woke.cancel()
                    continue
                extra = b""
                if self.runtime_metric:
                    extra = runtime_metric_annotations(
                        partition.last_sequence_number, partition.last_offset, partition.last_enqueued_time_ms
                    )
                send = link.send
                sent = 0
                for ev in events:
                    if not link.can_send:
                        break
                    send(
                        delivery_bytes(
                            ev.payload,
                            ev.sequence_number,
                            ev.offset,
                            ev.enqueued_time_ms,
                            ev.partition_key,
                            extra,
                        )
                    )
                    self.next_seq = ev.sequence_number + 1
                    sent += 1
                self.handler.emulator.stats["events_out"] += sent
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            pass
        except Exception:
            LOG.exception("consumer pump for %s failed; detaching the link", self.key)
            link.detach(Condition.INTERNAL_ERROR, "The emulator failed while delivering events.")


class EventHubsHandler(ConnectionHandler):
    """Per-connection Event Hubs logic."""

    def __init__(self, emulator: EventHubsEmulator) -> None:
        self.emulator = emulator
        self.store = emulator.store
        self.auth = cbs.Authorization()
        self.conn: AMQPConnection | None = None
        self.consumers: dict[int, Consumer] = {}  # id(link) -> consumer
        self._reply_links: dict[tuple[int, str], Link] = {}  # (id(session), "$cbs"|"$management")
        self._reply_queue: dict[int, collections.deque[bytes]] = {}

    # ----------------------------------------------------------------- lifecycle
    def connection_made(self, conn: AMQPConnection) -> None:
        self.conn = conn
        self.emulator.connections.add(conn)

    def on_close(self) -> None:
        if self.conn is not None:
            self.emulator.connections.discard(self.conn)
        for consumer in list(self.consumers.values()):
            self._drop_consumer(consumer)

    def on_writable(self) -> None:
        for consumer in self.consumers.values():
            consumer.wake.set()

    # ----------------------------------------------------------------- attach
    def on_attach(self, link: Link) -> None:
        if link.is_sender:
            address = getattr(link.source, "address", None)
        else:
            address = getattr(link.target, "address", None)
        if not isinstance(address, str) or not address:
            raise EntityNotFound("The link has no source/target address.")
        node = address.strip().lower()
        if node in ("$cbs", "$management"):
            link.app = node
            if link.is_sender:
                self._reply_links[(id(link.session), node)] = link
                self._reply_queue[id(link)] = collections.deque()
            link.max_message_size = 1 << 20 if not link.is_sender else None
            return
        segments = cbs.path_segments(address)
        if not self.auth.covers(address):
            raise Unauthorized(
                f"Unauthorized access to '{address}': no valid token covers this address (send a $cbs "
                "put-token first)."
            )
        if not segments:
            raise EntityNotFound(f"The messaging entity '{address}' could not be found.")
        try:
            hub = self.store.hub(segments[0])
        except KeyError:
            raise EntityNotFound(
                f"The messaging entity '{self.store.namespace}:eventhub:{segments[0]}' could not be found."
            ) from None
        if link.is_sender:
            self._attach_consumer(link, hub, segments, address)
        else:
            self._attach_producer(link, hub, segments, address)

    def _attach_producer(self, link: Link, hub: Hub, segments: list[str], address: str) -> None:
        partition_id = None
        if len(segments) == 3 and segments[1] == "partitions":
            partition_id = segments[2]
            if partition_id not in hub.partitions:
                raise EntityNotFound(
                    f"The messaging entity '{address}' could not be found (no such partition)."
                )
        elif len(segments) != 1:
            raise EntityNotFound(f"The messaging entity '{address}' could not be found.")
        limit = hub.max_message_size
        asked = link.remote_max_message_size
        link.max_message_size = min(asked, limit) if asked else limit
        link.app = (hub, partition_id)

    def _attach_consumer(self, link: Link, hub: Hub, segments: list[str], address: str) -> None:
        if len(segments) != 5 or segments[1] != "consumergroups" or segments[3] != "partitions":
            raise EntityNotFound(f"The messaging entity '{address}' could not be found.")
        group = segments[2]
        if not hub.has_consumer_group(group):
            raise EntityNotFound(
                f"The messaging entity '{self.store.namespace}:eventhub:{hub.name}/consumergroups/{group}' "
                "could not be found."
            )
        partition = hub.partitions.get(segments[4])
        if partition is None:
            raise EntityNotFound(f"The messaging entity '{address}' could not be found (no such partition).")
        props = link.properties
        epoch = props.get(EPOCH)
        if epoch is not None and (not isinstance(epoch, int) or isinstance(epoch, bool)):
            raise InvalidFilter(f"{EPOCH} must be a long, got {epoch!r}")
        consumer = Consumer(self, link, hub, partition, group, epoch)
        # start position from the selector filter
        start = partition.begin_sequence_number
        filters = getattr(link.source, "filter", None)
        if isinstance(filters, dict):
            for value in filters.values():
                expr = value.value if type(value) is Described else value
                if isinstance(expr, bytes):
                    expr = expr.decode("utf-8", "replace")
                if isinstance(expr, str):
                    kind, inclusive, text = parse_filter(expr)
                    start = start_sequence(partition, kind, inclusive, text)
        consumer.next_seq = start
        caps = link.desired_capabilities
        consumer.runtime_metric = RUNTIME_METRIC in caps
        offered = [Symbol(c) for c in caps if c in (RUNTIME_METRIC, GEOREPLICATION)]
        link.offered_capabilities = offered or None
        link.snd_settle_mode = 1
        self.emulator.register_consumer(consumer)  # raises ReceiverStolen / QuotaExceeded
        link.app = consumer
        self.consumers[id(link)] = consumer
        consumer.start()

    # ----------------------------------------------------------------- detach
    def on_detach(self, link: Link, error: Error | None) -> None:
        app = link.app
        if isinstance(app, Consumer):
            self._drop_consumer(app)
        elif app in ("$cbs", "$management") and link.is_sender:
            key = (id(link.session), app)
            if self._reply_links.get(key) is link:
                del self._reply_links[key]
            self._reply_queue.pop(id(link), None)

    def _drop_consumer(self, consumer: Consumer) -> None:
        consumer.stop()
        self.consumers.pop(id(consumer.link), None)
        self.emulator.unregister_consumer(consumer)

    # ----------------------------------------------------------------- credit
    def on_credit(self, link: Link) -> None:
        app = link.app
        if isinstance(app, Consumer):
            app.wake.set()
        elif id(link) in self._reply_queue:
            queue = self._reply_queue[id(link)]
            while queue and link.can_send:
                link.send(queue.popleft())
            if not queue:
                link.finish_drain()

    # ----------------------------------------------------------------- messages
    def on_message(self, link: Link, delivery: Delivery) -> Any:
        app = link.app
        if type(app) is tuple:
            return self._produce(app[0], app[1], delivery)
        if app in ("$cbs", "$management"):
            return self._request(link, app, delivery)
        return Rejected(
            Error(Symbol(Condition.NOT_ALLOWED.value), "This link does not accept messages.", None)
        )

    def _produce(self, hub: Hub, partition_id: str | None, delivery: Delivery) -> Any:
        try:
            items = store_delivery(delivery.payload, delivery.message_format)
        except (MessageFormatError, CodecError) as exc:
            return Rejected(Error(Symbol(Condition.DECODE_ERROR.value), str(exc), None))
        if partition_id is None:
            key = items[0][1]
            partition_id = hub.partition_for_key(key) if key is not None else hub.next_partition()
        try:
            hub.partitions[partition_id].append(items)
        except Exception as exc:
            LOG.exception("append to %s/%s failed", hub.name, partition_id)
            return Rejected(
                Error(Symbol(Condition.INTERNAL_ERROR.value), f"The event could not be stored: {exc}", None)
            )
        self.emulator.stats["events_in"] += len(items)
        return _ACCEPTED

    def _request(self, link: Link, node: str, delivery: Delivery) -> Any:
        try:
            request = decode_message(delivery.payload)
        except CodecError as exc:
            return Rejected(Error(Symbol(Condition.DECODE_ERROR.value), f"Invalid request: {exc}", None))
        request_id = request.properties.message_id if request.properties is not None else None
        if node == "$cbs":
            status, description = cbs.put_token(request, self.auth, self.emulator.config.policies, time.time)
            reply = cbs.response(request_id, status, description)
        else:
            props = request.application_properties or {}
            authorized = self._management_authorized(props)
            try:
                body = mgmt.handle_request(self.store, request, authorized)
                reply = cbs.response(request_id, 200, "OK", body)
            except ManagementError as exc:
                reply = cbs.response(request_id, exc.status, exc.description)
        if delivery.settled:
            self._reply(link.session, node, reply)
            return None
        # The request's disposition goes out before its response: uAMQP's management client drops a
        # response whose request has no send confirmation yet ("Did not receive send confirmation for
        # pending operation"), as the real service never answers first.
        link.session.queue_disposition(delivery.delivery_id, _ACCEPTED)
        link.session.flush_dispositions()
        self._reply(link.session, node, reply)
        return None

    def _management_authorized(self, props: dict[Any, Any]) -> bool:
        """A $cbs token covering the hub, or a valid ``security_token`` application property for it."""
        name = props.get("name")
        if not isinstance(name, str):
            return False
        if self.auth.covers("/" + name):
            return True
        token = props.get("security_token")
        if not isinstance(token, str):
            return False
        try:
            audience = unquote_plus(parse_sas_token(token)["sr"])
            validate_sas_token(token, audience, self.emulator.config.policies, time.time())
        except (AuthError, KeyError):
            return False
        probe = cbs.Authorization()
        probe.grant(audience)
        return probe.covers("/" + name)

    def _reply(self, session: Any, node: str, reply: bytes) -> None:
        link = self._reply_links.get((id(session), node))
        if link is None:
            LOG.info("%s request without a reply link on the same session; reply dropped", node)
            return
        queue = self._reply_queue[id(link)]
        if queue or not link.can_send:
            queue.append(reply)
        else:
            link.send(reply)
