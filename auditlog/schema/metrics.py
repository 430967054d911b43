"""GraphQL operation latency (auditlog.metrics), as a schema extension."""

from __future__ import annotations

import time
from collections.abc import Iterator

from strawberry.extensions import SchemaExtension

from auditlog.metrics import GRAPHQL_SECONDS, operation_label


class OperationMetrics(SchemaExtension):
    """Times each query and mutation (a subscription's lifetime is no latency)."""

    def on_operation(self) -> Iterator[None]:
        start = time.perf_counter()
        yield
        context = self.execution_context
        try:
            kind = context.operation_type.value
        except Exception:  # no document (a parse error), or an unknown operation name
            kind = "invalid"
        if kind == "subscription":
            return
        GRAPHQL_SECONDS.labels(kind, operation_label(context.operation_name)).observe(
            time.perf_counter() - start
        )
