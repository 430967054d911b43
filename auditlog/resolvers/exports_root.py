"""The export fields of Query and Mutation, merged into the schema in root.py."""

from __future__ import annotations

import strawberry

from auditlog.resolvers import exports as export_resolvers
from auditlog.schema.context import Info
from auditlog.schema.exports import CreateExportInput, Export
from auditlog.schema.permissions import reader


@strawberry.type
class ExportQuery:
    @strawberry.field(  # type: ignore[untyped-decorator]
        description="One export of the caller's workspace; null when not found.",
        extensions=reader(),
    )
    async def export(self, info: Info, id: strawberry.ID) -> Export | None:
        return await export_resolvers.export(info.context, id)

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="Newest first; `after` = id of the last export already seen.",
        extensions=reader(),
    )
    async def exports(
        self, info: Info, first: int | None = None, after: strawberry.ID | None = None
    ) -> list[Export]:
        return await export_resolvers.exports(info.context, first, after)


@strawberry.type
class ExportMutation:
    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Fixes the filtered result now and answers READY with files of "
        "at most 10,000 rows; files are produced on download.",
        extensions=reader(),
    )
    async def create_export(self, info: Info, input: CreateExportInput) -> Export:
        return await export_resolvers.create_export(info.context, input)
