"""Which argument a document or variables error is about.

graphql-core reports a wrong literal ("Value 'NOPE' does not exist in
'EventCategory' enum") or a wrong variable value without saying which
argument it was given to; BAD_USER_INPUT must name it. The error's node is
found in the document and the argument path (`filter.categories`) read off.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    ArgumentNode,
    DocumentNode,
    GraphQLError,
    ObjectFieldNode,
    ValueNode,
    VariableDefinitionNode,
    VariableNode,
    Visitor,
    visit,
)


class _ArgumentFinder(Visitor):
    def __init__(self, offset: int | None, variable: str | None) -> None:
        super().__init__()
        self.offset, self.variable = offset, variable
        self.path: list[str] = []
        self.found: str | None = None

    def _enter(self, name: str, node: ArgumentNode | ObjectFieldNode) -> None:
        self.path.append(name)
        loc = node.loc
        if self.offset is not None and loc is not None and loc.start <= self.offset < loc.end:
            self.found = ".".join(self.path)

    def enter_argument(self, node: ArgumentNode, *_args: Any) -> None:
        self._enter(node.name.value, node)

    def leave_argument(self, *_args: Any) -> None:
        self.path.pop()

    def enter_object_field(self, node: ObjectFieldNode, *_args: Any) -> None:
        self._enter(node.name.value, node)

    def leave_object_field(self, *_args: Any) -> None:
        self.path.pop()

    def enter_variable(self, node: VariableNode, *_args: Any) -> None:
        if self.found is None and self.path and node.name.value == self.variable:
            self.found = ".".join(self.path)


def input_argument(error: GraphQLError, document: DocumentNode | None) -> str | None:
    """The argument path a bad literal or variable value was given to, if it is one."""
    if document is None or not error.nodes:
        return None
    node = error.nodes[0]
    if isinstance(node, VariableDefinitionNode):
        finder = _ArgumentFinder(None, node.variable.name.value)
    elif isinstance(node, ValueNode | ObjectFieldNode) and node.loc is not None:
        finder = _ArgumentFinder(node.loc.start, None)
    else:
        return None
    visit(document, finder)
    return finder.found
