"""Execution of plain leaf fields without graphql-core's per-field machinery.

A page of 50 events asks for about 1,700 fields, 1,400 of them leaves read
straight off an attribute (`occurredAt`, `actor { email }`, ...). graphql-core
handles each one alike: a resolve-info object, Strawberry's resolver wrapper,
awaitable checks and a completion dispatch, about 5 µs a field, which made
GraphQL execution 70 % of a page's time (docs/benchmarks.md).

`LeafFastExecutor.execute_fields` does what that path does for such a field,
directly: the field's default resolver (`getattr`), then the leaf type's
`coerce_output_value`. It takes the fast path only where the outcome cannot
differ: a field with no resolver of its own, no field extension and no
arguments, under no field middleware, whose value is neither an awaitable nor
null where null is not allowed, and that coerces without error to a non-null
value. Anything else, including every error, goes the stock way, so results and
errors are those of stock execution (tests/test_execution.py compares the two).
Lists of leaves (`anomalies`) take it too when every item does.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphql import (
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    is_leaf_type,
)
from graphql.pyutils import Path, Undefined, gather_with_cancel
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

_BASE = StrawberryGraphQLCoreExecutionContext
# The fast path mirrors graphql-core 3.3's execute_fields; with any other
# signature it stays off and execution is stock.
_SUPPORTED = list(inspect.signature(_BASE.execute_fields).parameters) == [
    "self",
    "parent_type",
    "source_value",
    "path",
    "grouped_field_set",
    "position_context",
]


@dataclass(frozen=True, slots=True)
class _Leaf:
    attribute: str
    resolve: Callable[[Any, str], Any]  # Strawberry's default resolver (getattr)
    coerce: Callable[[Any], Any]
    nullable: bool
    list_item_nullable: bool | None  # None: not a list


_plans: weakref.WeakKeyDictionary[GraphQLObjectType, dict[str, _Leaf]] = weakref.WeakKeyDictionary()


def _leaf_of(output: GraphQLOutputType) -> tuple[Callable[[Any], Any], bool, bool | None] | None:
    """(coerce, nullable, list item nullable or None) of a leaf or a list of leaves."""
    nullable = not isinstance(output, GraphQLNonNull)
    inner = output.of_type if isinstance(output, GraphQLNonNull) else output
    item_nullable: bool | None = None
    if isinstance(inner, GraphQLList):
        item = inner.of_type
        item_nullable = not isinstance(item, GraphQLNonNull)
        inner = item.of_type if isinstance(item, GraphQLNonNull) else item
    if not is_leaf_type(inner):
        return None
    return inner.coerce_output_value, nullable, item_nullable


def leaf_plan(parent_type: GraphQLObjectType) -> dict[str, _Leaf]:
    """The fields of `parent_type` that may take the fast path, by field name."""
    plan = _plans.get(parent_type)
    if plan is not None:
        return plan
    plan = {}
    for name, field in parent_type.fields.items():
        definition = field.extensions.get("strawberry-definition")
        # Strawberry marks the resolver of a field with no resolver of its own and
        # no field extension (its "basic" fields, read with the default resolver).
        if definition is None or field.args or not getattr(field.resolve, "_is_default", False):
            continue
        leaf = _leaf_of(field.type)
        if leaf is not None:
            coerce, nullable, item_nullable = leaf
            plan[name] = _Leaf(
                definition.python_name, definition.default_resolver, coerce, nullable, item_nullable
            )
    _plans[parent_type] = plan
    return plan


_MISS = object()


def _complete(leaf: _Leaf, value: Any, is_awaitable: Callable[[Any], bool]) -> Any:
    """The completed value, or _MISS where stock execution must decide."""
    if value is None:
        return None if leaf.nullable else _MISS
    if leaf.list_item_nullable is None:
        if is_awaitable(value):
            return _MISS
        out = leaf.coerce(value)
        return _MISS if out is None or out is Undefined else out
    if type(value) is not list:
        return _MISS
    items: list[Any] = []
    for item in value:
        if item is None:
            if not leaf.list_item_nullable:
                return _MISS
            items.append(None)
            continue
        if is_awaitable(item):
            return _MISS
        out = leaf.coerce(item)
        if out is None or out is Undefined:
            return _MISS
        items.append(out)
    return items


class LeafFastExecutor(_BASE):
    """Strawberry's execution context, with plain leaf fields completed directly."""

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: Any,
        position_context: Any,
    ) -> Any:
        manager = self.middleware_manager
        plan = leaf_plan(parent_type) if _SUPPORTED else None
        if not plan or (manager is not None and manager.middlewares):
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        results: dict[str, Any] = {}
        is_awaitable = self.is_awaitable
        awaitable_fields: list[str] = []
        try:
            for response_name, field_details_list in grouped_field_set.items():
                node = field_details_list[0].node
                leaf = None if node.arguments or node.directives else plan.get(node.name.value)
                if leaf is not None:
                    try:
                        value = _complete(
                            leaf, leaf.resolve(source_value, leaf.attribute), is_awaitable
                        )
                    except Exception:  # the stock path below reports it as stock does
                        value = _MISS
                    if value is not _MISS:
                        results[response_name] = value
                        continue
                result = self.execute_field(
                    parent_type,
                    source_value,
                    field_details_list,
                    Path(path, response_name, parent_type.name),
                    position_context,
                )
                if result is not Undefined:
                    results[response_name] = result
                    if is_awaitable(result):
                        awaitable_fields.append(response_name)
        except Exception:
            if awaitable_fields:
                self.settle_in_background([results[field] for field in awaitable_fields])
            raise
        if not awaitable_fields:
            return results
        return self._await_fields(results, awaitable_fields)

    async def _await_fields(
        self, results: dict[str, Any], awaitable_fields: list[str]
    ) -> dict[str, Any]:
        # As graphql-core does: one awaited directly, several gathered with cancel.
        if len(awaitable_fields) == 1:
            field = awaitable_fields[0]
            results[field] = await results[field]
        else:
            awaited = await gather_with_cancel(*(results[field] for field in awaitable_fields))
            results.update(zip(awaitable_fields, awaited, strict=True))
        return results
