"""The live tail in GraphQL: Subscription.auditEvents, and shared execution of its events.

Strawberry executes a subscription's selection set once per subscriber per
event. Subscribers with the same document, operation, variables and
workspace would compute the same answer, so the tail hands them one shared
`Delivery` per event; `SharedEventExecutor` executes its selection set once
and memoizes the result on it, and `SharedData` carries the result's JSON,
serialised once, to the websocket encoder (see `encode_shared_message`).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import ExecutionResult as GraphQLExecutionResult

from auditlog.schema.execution import PlainFieldExecutor


class LiveEdge:
    """What the subscription yields: an AuditEventEdge's fields, plus its memoized result."""

    __slots__ = ("cursor", "node", "result")

    def __init__(self, cursor: str, node: Any) -> None:
        self.cursor = cursor
        self.node = node
        self.result: Any = None


class SharedData(dict[str, Any]):
    """The `data` of a shared result; `json` is its serialisation, made once."""

    __slots__ = ("json",)

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        self.json: str | None = None


def encode_shared_message(message: Any) -> str | None:
    """A `next` (or legacy `data`) message whose payload is only shared data, or None."""
    if not isinstance(message, dict):
        return None
    payload = message.get("payload")
    if not isinstance(payload, dict) or len(payload) != 1:
        return None
    data = payload.get("data")
    if not isinstance(data, SharedData) or message.get("type") not in ("next", "data"):
        return None
    if data.json is None:
        data.json = orjson.dumps(data).decode()
    op_id = orjson.dumps(message["id"]).decode()
    return f'{{"id":{op_id},"type":"{message["type"]}","payload":{{"data":{data.json}}}}}'


@dataclass
class LiveOperation:
    """Set by the websocket handler in each operation's task: once the first event has
    gone through Strawberry, it holds what the handler needs to send the following
    ones itself (the subscriber's edges and the operation's executor)."""

    edges: AsyncGenerator[LiveEdge, None] | None = None
    executor: SharedEventExecutor | None = None

    @property
    def ready(self) -> bool:
        return self.edges is not None and self.executor is not None

    async def results(self) -> AsyncGenerator[Any, None]:
        """The execution result of each following event, shared within its group."""
        assert self.edges is not None and self.executor is not None
        async for edge in self.edges:
            result = edge.result
            if result is None:
                result = self.executor.build_per_event_executor(edge).execute_operation(False)
                if inspect.isawaitable(result):
                    result = await result
            yield result


live_operation: ContextVar[LiveOperation | None] = ContextVar("live_operation", default=None)


class SharedEventExecutor(PlainFieldExecutor):
    """Executes a subscription event once per LiveEdge, however many subscribers get it."""

    def execute_operation(self, *args: Any, **kwargs: Any) -> Any:
        edge = self.root_value
        if not isinstance(edge, LiveEdge):
            return super().execute_operation(*args, **kwargs)
        operation = live_operation.get()
        if operation is not None and operation.executor is None:
            operation.executor = self
        if edge.result is None:
            result = super().execute_operation(*args, **kwargs)
            if self.is_awaitable(result):
                return self._memoize_later(edge, result)
            edge.result = _shareable(result)
        return edge.result

    async def _memoize_later(self, edge: LiveEdge, pending: Any) -> Any:
        edge.result = _shareable(await pending)
        return edge.result


def _shareable(result: Any) -> Any:
    if result.data is not None and not result.errors:
        return GraphQLExecutionResult(data=SharedData(result.data), extensions=result.extensions)
    return result
