"""Limits on what one GraphQL document may ask for, checked before any work.

Depth, aliases and cost are a validation rule, so a refused document never
reaches a resolver and the verdict is cached with the validation result. The
cost of a field is 1 times the page sizes of the connections above it (the
literal `first`/`last`, the maximum when it is a variable, the default when
absent), fragments counted every time they are spread. Parsing itself is
bounded by a token count. Every refusal is QUERY_TOO_COMPLEX.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from graphql import (
    ExecutableDefinitionNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)
from strawberry.extensions import SchemaExtension

from auditlog.schema.errors import QueryTooComplex

MAX_DEPTH = 10
MAX_ALIASES = 20
MAX_COST = 50_000
MAX_TOKENS = 5_000
# Page sizes of the lists, shared with their resolvers.
PAGE_DEFAULT = 50
PAGE_MAX = 500
EXPORTS_DEFAULT = 20
EXPORTS_MAX = 100
DEAD_LETTERS_DEFAULT = 50
_PAGE_ARGUMENTS = ("first", "last")
_INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})


@dataclass
class _Measure:
    depth: int = 0
    aliases: int = 0
    cost: int = 0


# Lists whose size the client does not state: what they return by default.
_DEFAULT_PAGES = {
    "auditEvents": PAGE_DEFAULT,
    "exports": EXPORTS_DEFAULT,
    "deadLetters": DEAD_LETTERS_DEFAULT,
}


def _page_size(field: FieldNode) -> int:
    for argument in field.arguments or ():
        if argument.name.value in _PAGE_ARGUMENTS:
            value = argument.value
            if isinstance(value, IntValueNode):
                return max(1, min(int(value.value), PAGE_MAX))
            return PAGE_MAX  # a variable: assume the largest page it could ask for
    return _DEFAULT_PAGES.get(field.name.value, 1)


class _Walker:
    def __init__(self, fragments: dict[str, FragmentDefinitionNode]) -> None:
        self.fragments = fragments
        self.measure = _Measure()

    def walk(
        self,
        selections: SelectionSetNode | None,
        depth: int,
        weight: int,
        path: frozenset[str],
        introspection: bool = False,
    ) -> None:
        if selections is None or self.over_limits():
            return
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                name = selection.name.value
                inside = introspection or name in _INTROSPECTION_ROOTS
                # `ofType` unwraps one list or non-null wrapper: a chain of single
                # objects, which the standard introspection query (graphql-core's,
                # as gql and GraphiQL send it) nests 7 deep. It adds no depth.
                here = depth if inside and name == "ofType" else depth + 1
                self.measure.depth = max(self.measure.depth, here)
                self.measure.cost += weight
                if selection.alias is not None:
                    self.measure.aliases += 1
                inner = weight * _page_size(selection)
                self.walk(selection.selection_set, here, inner, path, inside)
            elif isinstance(selection, InlineFragmentNode):
                self.walk(selection.selection_set, depth, weight, path, introspection)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is not None and name not in path:  # cycles are another rule's error
                    self.walk(fragment.selection_set, depth, weight, path | {name}, introspection)

    def over_limits(self) -> bool:
        m = self.measure
        return m.depth > MAX_DEPTH or m.aliases > MAX_ALIASES or m.cost > MAX_COST

    def refusals(self) -> Iterator[str]:
        m = self.measure
        if m.depth > MAX_DEPTH:
            yield f"the query is nested deeper than {MAX_DEPTH} levels"
        if m.aliases > MAX_ALIASES:
            yield f"the query uses more than {MAX_ALIASES} aliases"
        if m.cost > MAX_COST:
            yield (
                f"the query could return more than {MAX_COST} values "
                "(fields times page sizes): ask for fewer fields or smaller pages"
            )


class QueryLimitsRule(ValidationRule):
    """Refuses operations over the depth, alias or cost limit."""

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        definitions: tuple[ExecutableDefinitionNode, ...] = tuple(
            d
            for d in context.document.definitions
            if isinstance(d, FragmentDefinitionNode | OperationDefinitionNode)
        )
        self._fragments = {
            d.name.value: d for d in definitions if isinstance(d, FragmentDefinitionNode)
        }

    def enter_operation_definition(self, node: OperationDefinitionNode, *_args: Any) -> None:
        walker = _Walker(self._fragments)
        walker.walk(node.selection_set, 0, 1, frozenset())
        for reason in walker.refusals():
            self.report_error(QueryTooComplex(reason, [node]))


class QueryLimits(SchemaExtension):
    """Adds the limits rule and the parser's token limit to every operation (the
    token limit's error is turned into QUERY_TOO_COMPLEX by AuditLogSchema)."""

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        context.parse_options["max_tokens"] = MAX_TOKENS
        context.validation_rules = (*context.validation_rules, QueryLimitsRule)
        yield
