"""The service's executor (plain leaves completed directly) answers exactly as
Strawberry's stock execution: the same data, the same errors, also where values
are wrong."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncGenerator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import strawberry
from graphql import get_introspection_query
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types import ExecutionResult

from auditlog.resolvers.root import build_schema
from auditlog.schema import execution
from auditlog.schema.types import (
    Actor,
    ActorType,
    AuditEvent,
    AuditEventConnection,
    AuditEventEdge,
    Location,
    PageInfo,
)
from bench.query_measure import FULL_PAGE

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def random_payload(rng: random.Random, i: int) -> dict[str, Any]:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(10**7))
    stamp = at.isoformat().replace("+00:00", "Z")

    def maybe(value: Any) -> Any:
        return value if rng.random() < 0.7 else None

    payload: dict[str, Any] = {
        "id": str(uuid.UUID(int=rng.getrandbits(128))),
        "occurredAt": stamp,
        "receivedAt": stamp,
        "action": rng.choice(["user.login.succeeded", "file.uploaded", "ai.chat.created"]),
        "category": rng.choice(["AUTHENTICATION", "DATA", "AI"]),
        "actor": {
            "type": rng.choice(["USER", "SYSTEM", "API_KEY"]),
            "id": maybe(f"u_{i}"),
            "name": maybe('Zoë \u2028 "quoted" <b>'),
            "email": maybe(f"user{i}@example.com"),
        },
        "targets": [
            {"type": "file", "id": maybe(f"f_{j}"), "name": maybe("".join(rng.sample(LETTERS, 5)))}
            for j in range(rng.randrange(3))
        ],
        "ipAddress": maybe("2001:db8::1"),
        "userAgent": maybe("Mozilla/5.0"),
        "metadata": {"n": rng.randrange(100), "nested": {"list": [1, "two", None]}},
        "anomalies": rng.sample(["NEW_COUNTRY", "NEW_DEVICE", "NEW_IP"], rng.randrange(4)),
    }
    if rng.random() < 0.5:
        payload["location"] = {
            "city": maybe("London"),
            "region": maybe("England"),
            "country": "United Kingdom",
            "countryCode": "GB",
            "latitude": maybe(51.5),
            "longitude": maybe(-0.12),
        }
    if rng.random() < 0.5:
        payload["device"] = {"browser": "Chrome", "browserVersion": maybe("120.0"), "os": "Linux"}
    return payload


def schema_over(nodes: list[Any], executor: type | None) -> strawberry.Schema:
    """The service's schema (its types, extensions and limits) over `nodes` in memory."""
    edges = [AuditEventEdge(cursor=f"c{i}", node=node) for i, node in enumerate(nodes)]
    connection = AuditEventConnection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=True, has_previous_page=False, start_cursor="c0", end_cursor=None
        ),
    )

    @strawberry.type
    class MemoryQuery:
        @strawberry.field
        def audit_events(
            self, filter: str | None = None, first: int | None = None, after: str | None = None
        ) -> AuditEventConnection:
            return connection

        @strawberry.field
        def one(self) -> AuditEvent | None:
            return nodes[0] if nodes else None

    schema = build_schema(MemoryQuery)
    if executor is not None:
        schema.execution_context_class = executor
    return schema


async def both(nodes: list[Any], document: str, **variables: Any) -> tuple[Any, Any]:
    """(stock, service) results of `document`, each as plain JSON-ready data."""
    answers = []
    for executor in (StrawberryGraphQLCoreExecutionContext, None):
        result = await schema_over(nodes, executor).execute(document, variable_values=variables)
        answers.append(
            {
                "data": result.data,
                "errors": [
                    {**e.formatted, "original": repr(e.original_error)} for e in result.errors or []
                ],
            }
        )
    return answers[0], answers[1]


DOCUMENTS = [
    FULL_PAGE.replace("$filter: AuditEventFilter", "$filter: String"),
    """{ auditEvents { edges { node { ...E } } } }
       fragment E on AuditEvent { id when: occurredAt a: action category
         actor { __typename type email } actor2: actor { id } location { ...L } anomalies }
       fragment L on Location { latitude lat2: latitude country }""",
    """query($yes: Boolean!) { auditEvents { edges { cursor
         node { id @include(if: $yes) action @skip(if: $yes) __typename
                targets { id name type } device { os os } } } } }""",
    "{ one { id payload metadata ipAddress } }",
    get_introspection_query(descriptions=True),
]


@pytest.mark.parametrize("document", DOCUMENTS)
async def test_the_same_answer_as_stock_execution(document: str) -> None:
    rng = random.Random(7)
    nodes = [AuditEvent.from_payload(random_payload(rng, i)) for i in range(60)]
    stock, service = await both(nodes, document, yes=True, first=50)
    assert stock == service
    assert not stock["errors"], stock["errors"]
    assert orjson.dumps(stock) == orjson.dumps(service)  # also the order of keys


def broken_nodes() -> list[Any]:
    rng = random.Random(11)
    good = AuditEvent.from_payload(random_payload(rng, 0))
    return [
        good,
        replace_field(good, action=None),  # null where the schema says String!
        replace_field(good, anomalies=["NEW_IP", None]),  # a null item in [String!]!
        replace_field(good, occurred_at="not a datetime"),  # fails to serialise
        replace_field(
            good,
            location=Location(
                city=None,
                region=None,
                country=None,
                country_code=None,
                latitude="north",  # type: ignore[arg-type]
                longitude=None,
            ),
        ),
        replace_field(good, actor=Actor(type="ROBOT", id=None, name=None, email=None)),  # type: ignore[arg-type]
        replace_field(good, actor=Actor(type=ActorType.USER, id=None, name=7, email=None)),  # type: ignore[arg-type]
        replace_field(good, anomalies=("NEW_IP",)),  # any iterable is a list to GraphQL
        good,
    ]


def replace_field(node: AuditEvent, **changes: Any) -> AuditEvent:
    return replace(node, **changes)


async def test_the_same_errors_as_stock_execution() -> None:
    nodes = broken_nodes()
    document = DOCUMENTS[0].replace("$filter: AuditEventFilter", "$filter: String")
    stock, service = await both(nodes, document, first=50)
    assert stock["errors"], "the broken values must give errors"
    assert stock == service


async def test_errors_on_a_single_node_are_those_of_stock_execution() -> None:
    document = """{ one { action anomalies occurredAt
        actor { type name } location { latitude } } }"""
    erring = 0
    for node in broken_nodes():
        stock, service = await both([node], document)
        assert stock == service
        erring += bool(stock["errors"])
    # Every broken node but two that String and lists accept (an int name, a tuple).
    assert erring == 5


def test_the_fast_path_is_on_for_this_graphql_core() -> None:
    # Off would still be correct, but slow: the pin in pyproject.toml keeps it on.
    assert execution._SUPPORTED
    schema = build_schema()
    types = schema._schema.type_map
    plan = execution.field_plan(types["AuditEvent"])  # type: ignore[arg-type]
    assert {"id", "occurredAt", "action", "payload", "metadata", "anomalies"} <= set(plan)
    assert {"actor", "targets", "location", "device"} <= set(plan)
    assert set(execution.field_plan(types["AuditEventConnection"])) == {"edges", "pageInfo"}  # type: ignore[arg-type]
    assert execution.field_plan(types["Query"]) == {}  # type: ignore[arg-type]


async def test_a_page_of_plain_fields_takes_the_fast_path_whole() -> None:
    """Only the root field is executed the stock way: the connection, its edges
    and every event below are completed directly (50 events, about 1,700 fields)."""
    calls: list[str] = []

    class Counting(execution.PlainFieldExecutor):
        def execute_field(self, parent_type: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(parent_type.name)
            return super().execute_field(parent_type, *args, **kwargs)

    rng = random.Random(3)
    nodes = [AuditEvent.from_payload(random_payload(rng, i)) for i in range(50)]
    document = DOCUMENTS[0]
    result = await schema_over(nodes, Counting).execute(document, variable_values={"first": 50})
    assert not result.errors
    assert result.data is not None and len(result.data["auditEvents"]["edges"]) == 50
    assert calls == ["MemoryQuery"]
    # A broken value deep in one event sends the fields above it the stock way,
    # down to the broken one (the other events below still complete directly).
    calls.clear()
    broken = [*nodes[:10], replace_field(nodes[10], anomalies=["NEW_IP", None]), *nodes[11:]]
    result = await schema_over(broken, Counting).execute(document, variable_values={"first": 50})
    assert calls == ["MemoryQuery", "AuditEventConnection", "AuditEventEdge", "AuditEvent"]
    assert result.errors is not None
    assert [e.path for e in result.errors] == [["auditEvents", "edges", 10, "node", "anomalies", 1]]


def test_stored_timestamps_read_as_the_strict_parser_reads_them() -> None:
    """Events are built from stored payloads with a faster reading of their
    timestamps; it gives what parse_timestamp gives, canonical or not."""
    from auditlog.model import format_timestamp, parse_timestamp
    from auditlog.schema.types import _stored_time

    rng = random.Random(5)
    texts = [
        format_timestamp(datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=n))
        for n in (rng.randrange(10**16) for _ in range(2000))
    ]
    texts += [
        "2026-11-29t05:10:42.123456789z",
        "2026-11-29 05:10:42+02:00",
        "2026-11-29T05:10:42.5Z",
        "2026-11-29T23:59:59-11:30",
    ]
    for text in texts:
        read = _stored_time(text)
        assert read == parse_timestamp(text) and read.utcoffset() == timedelta(0), text


async def test_a_long_subscription_keeps_no_cache_entry_per_event() -> None:
    """graphql-core collects a subscription's root fields anew for every event:
    caches keyed by the identity of the field lists below them grew by about six
    entries an event for the life of a live tail. Each event's executor now has
    its own, and the answers stay right."""
    executors: list[execution.PlainFieldExecutor] = []

    class Spy(execution.PlainFieldExecutor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            executors.append(self)

    rng = random.Random(9)
    nodes = [AuditEvent.from_payload(random_payload(rng, i)) for i in range(300)]

    @strawberry.type
    class Tail:
        @strawberry.subscription
        async def audit_events(self) -> AsyncGenerator[AuditEventEdge, None]:
            for i, node in enumerate(nodes):
                yield AuditEventEdge(cursor=f"c{i}", node=node)

    @strawberry.type
    class Nothing:
        nothing: str | None = None

    schema = strawberry.Schema(query=Nothing, subscription=Tail, execution_context_class=Spy)
    document = "subscription { auditEvents { cursor node { id actor { email } targets { id } } } }"
    stream = await schema.subscribe(document)
    assert not isinstance(stream, ExecutionResult)
    seen = []
    async for result in stream:
        assert not result.errors and result.data is not None
        seen.append(result.data["auditEvents"])
    assert [s["node"]["id"] for s in seen] == [n.id for n in nodes]
    assert seen[7]["node"]["actor"]["email"] == nodes[7].actor.email
    assert len(executors) == 1  # the per-event executors are copies of it
    cached = len(executors[0]._plain_selections) + len(executors[0]._relevant_sub_fields)
    assert cached < 20, cached  # was about 6 per event: 1,800 here
