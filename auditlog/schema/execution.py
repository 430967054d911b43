"""Execution of plain fields without graphql-core's per-field machinery.

A page of 50 events asks for about 1,700 fields, nearly all of them read
straight off an attribute (`occurredAt`, `actor { email }`, `edges { node }`).
graphql-core handles each one alike: a resolve-info object, Strawberry's
resolver wrapper, awaitable checks and a completion dispatch, about 5 µs a
field, which made GraphQL execution most of a page's time (docs/benchmarks.md).

`PlainFieldExecutor` completes *plain* fields itself: a field with no resolver
of its own, no field extension and no arguments (Strawberry's "basic" fields,
read with the default resolver), whose type is a leaf, an object type without
`is_type_of`, or a list of either. A plain field's whole value is completed
directly: leaves by their type's `coerce_output_value`, objects field by field
the same way, `__typename` as the type's name. The moment anything in that
value is not plain or would not complete cleanly (null where null is not
allowed, a value that does not coerce, an awaitable, a non-list where a list
is expected, a field with a resolver, @defer, field middleware), the field is
executed again the stock way from the start, so every result and every error
is stock execution's (tests/test_execution.py compares the two). Nothing is
recorded by the fast path, so nothing is recorded twice.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphql import (
    GraphQLID,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLString,
    is_leaf_type,
)
from graphql.pyutils import Path, Undefined, gather_with_cancel
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

_BASE = StrawberryGraphQLCoreExecutionContext
# The fast path mirrors graphql-core 3.3's execute_fields and collect_subfields;
# with other signatures it stays off and execution is stock.
_SUPPORTED = list(inspect.signature(_BASE.execute_fields).parameters) == [
    "self",
    "parent_type",
    "source_value",
    "path",
    "grouped_field_set",
    "position_context",
] and list(inspect.signature(_BASE.collect_subfields).parameters) == [
    "self",
    "return_type",
    "field_details_list",
]
# Directives that collecting fields has already applied; any other on a field
# (@stream, a custom one) leaves it to stock execution.
_APPLIED_DIRECTIVES = frozenset(("include", "skip"))


@dataclass(frozen=True, slots=True)
class _Plain:
    attribute: str
    resolve: Callable[[Any, str], Any]  # Strawberry's default resolver (getattr)
    nullable: bool
    list_item_nullable: bool | None  # None: not a list
    coerce: Callable[[Any], Any] | None  # a leaf's; None for an object type
    object_type: GraphQLObjectType | None
    # String and ID give back a str as it is (graphql-core's serialize_string and
    # serialize_id): no call for the most common value of all.
    str_as_is: bool = False


_plans: weakref.WeakKeyDictionary[GraphQLObjectType, dict[str, _Plain]] = (
    weakref.WeakKeyDictionary()
)


def _plain_of(attribute: str, resolve: Any, output: GraphQLOutputType) -> _Plain | None:
    nullable = not isinstance(output, GraphQLNonNull)
    inner = output.of_type if isinstance(output, GraphQLNonNull) else output
    item_nullable: bool | None = None
    if isinstance(inner, GraphQLList):
        item = inner.of_type
        item_nullable = not isinstance(item, GraphQLNonNull)
        inner = item.of_type if isinstance(item, GraphQLNonNull) else item
    if is_leaf_type(inner):
        as_is = inner is GraphQLString or inner is GraphQLID
        coerce = inner.coerce_output_value
        return _Plain(attribute, resolve, nullable, item_nullable, coerce, None, as_is)
    if isinstance(inner, GraphQLObjectType) and inner.is_type_of is None:
        return _Plain(attribute, resolve, nullable, item_nullable, None, inner)
    return None  # an interface or a union: stock execution resolves its type


def field_plan(parent_type: GraphQLObjectType) -> dict[str, _Plain]:
    """The plain fields of `parent_type`, by field name."""
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
        plain = _plain_of(definition.python_name, definition.default_resolver, field.type)
        if plain is not None:
            plan[name] = plain
    _plans[parent_type] = plan
    return plan


_MISS = object()  # "stock execution must do this field"


def _plain_selection(field_details_list: Any) -> bool:
    for details in field_details_list:
        node = details.node
        if details.defer_usage is not None or node.arguments:
            return False
        if node.directives and any(
            d.name.value not in _APPLIED_DIRECTIVES for d in node.directives
        ):
            return False
    return True


class PlainFieldExecutor(_BASE):
    """Strawberry's execution context, with plain fields completed directly."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plain_selections: dict[tuple[GraphQLObjectType, int], Any] = {}

    def build_per_event_executor(self, payload: Any) -> Any:
        """A subscription event's executor, with caches of its own.

        graphql-core collects a subscription's root fields again for every event,
        so the field lists below them are new objects each time; the caches keyed
        by their identity (graphql-core's subfield cache and the selections here),
        shared by every event's copy of the executor, kept each event's entries
        for as long as the subscription lasted: about six per event, without end
        on a live tail. Each event now starts with empty ones, dropped with it.
        """
        executor = super().build_per_event_executor(payload)
        assert isinstance(executor, PlainFieldExecutor)  # a copy of this one
        executor._plain_selections = {}
        if isinstance(getattr(executor, "_relevant_sub_fields", None), dict):
            executor._relevant_sub_fields = {}
        return executor

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: Any,
        position_context: Any,
    ) -> Any:
        manager = self.middleware_manager
        plan = field_plan(parent_type) if _SUPPORTED else None
        if (
            not plan
            or position_context is not None  # incremental delivery under way
            or (manager is not None and manager.middlewares)
        ):
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        results: dict[str, Any] = {}
        is_awaitable = self.is_awaitable
        awaitable_fields: list[str] = []
        try:
            for response_name, field_details_list in grouped_field_set.items():
                plain = plan.get(field_details_list[0].node.name.value)
                if plain is not None and _plain_selection(field_details_list):
                    try:
                        value = self._complete_plain(
                            plain,
                            field_details_list,
                            plain.resolve(source_value, plain.attribute),
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

    def _complete_plain(self, plain: _Plain, field_details_list: Any, value: Any) -> Any:
        """A plain field's completed value, or _MISS."""
        if value is None:
            return None if plain.nullable else _MISS
        if plain.list_item_nullable is None:
            return self._complete_item(plain, field_details_list, value)
        if type(value) is not list:
            return _MISS
        items: list[Any] = []
        for item in value:
            if item is None:
                if not plain.list_item_nullable:
                    return _MISS
                items.append(None)
                continue
            completed = self._complete_item(plain, field_details_list, item)
            if completed is _MISS:
                return _MISS
            items.append(completed)
        return items

    def _complete_item(self, plain: _Plain, field_details_list: Any, value: Any) -> Any:
        if plain.str_as_is and type(value) is str:
            return value
        if self.is_awaitable(value):
            return _MISS
        if plain.coerce is not None:
            out = plain.coerce(value)
            return _MISS if out is None or out is Undefined else out
        assert plain.object_type is not None
        return self._complete_object(plain.object_type, field_details_list, value)

    def _selection(
        self, object_type: GraphQLObjectType, field_details_list: Any
    ) -> list[tuple[str, _Plain | None, Any]] | None:
        """The selection on `object_type` as (response name, plain field, its details)
        (None and the type's name for `__typename`), or None when any of it is not
        plain. Made once per request for each selection, which a list's items share."""
        key = (object_type, id(field_details_list))
        cached = self._plain_selections.get(key)
        if cached is None:
            # Kept with its details list, so that the list's id cannot be reused.
            cached = (field_details_list, self._plain_selection_of(object_type, field_details_list))
            self._plain_selections[key] = cached
        return cached[1]

    def _plain_selection_of(
        self, object_type: GraphQLObjectType, field_details_list: Any
    ) -> list[tuple[str, _Plain | None, Any]] | None:
        collected = self.collect_subfields(object_type, field_details_list)
        if collected.new_defer_usages or collected.forbidden_directive_instances:
            return None
        plan = field_plan(object_type)
        selection: list[tuple[str, _Plain | None, Any]] = []
        for response_name, sub_details in collected.grouped_field_set.items():
            name = sub_details[0].node.name.value
            if name == "__typename":
                selection.append((response_name, None, object_type.name))
                continue
            plain = plan.get(name)
            if plain is None or not _plain_selection(sub_details):
                return None
            selection.append((response_name, plain, sub_details))
        return selection

    def _complete_object(
        self, object_type: GraphQLObjectType, field_details_list: Any, source: Any
    ) -> Any:
        selection = self._selection(object_type, field_details_list)
        if selection is None:
            return _MISS
        out: dict[str, Any] = {}
        for response_name, plain, details in selection:
            if plain is None:
                out[response_name] = details  # __typename
                continue
            value = plain.resolve(source, plain.attribute)
            if value is None:
                if not plain.nullable:
                    return _MISS
            elif plain.str_as_is and type(value) is str and plain.list_item_nullable is None:
                pass  # the most common leaf, as it is
            else:
                value = self._complete_plain(plain, details, value)
                if value is _MISS:
                    return _MISS
            out[response_name] = value
        return out

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
