"""GraphQL types, inputs and root fields of log streaming (docs/streaming.md)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, cast

import strawberry
from strawberry.scalars import JSON

from auditlog.model import DeadLetterRow
from auditlog.resolvers import streaming as resolvers
from auditlog.schema.context import Info
from auditlog.schema.permissions import streaming_admin
from auditlog.schema.types import EventCategory, EventFormat
from auditlog.services.streams import CreatedDestination, DeliveryTest, DestinationView
from auditlog.streaming import config as cfg


@strawberry.enum
class DestinationKind(Enum):
    S3 = "S3"
    DATADOG = "DATADOG"
    SPLUNK_HEC = "SPLUNK_HEC"
    WEBHOOK = "WEBHOOK"


@strawberry.enum
class DestinationStatus(Enum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    FAILING = "FAILING"


@strawberry.input
class S3ConfigInput:
    bucket: str
    region: str
    prefix: str | None = None
    access_key_id: str
    secret_access_key: str
    endpoint_url: str | None = None


@strawberry.input
class DatadogConfigInput:
    site: str
    api_key: str
    service: str | None = None
    tags: list[str] | None = None
    endpoint_url: str | None = None


@strawberry.input
class SplunkHecConfigInput:
    url: str
    token: str
    index: str | None = None
    sourcetype: str | None = None
    use_ack: bool | None = strawberry.field(
        default=None,
        description="wait for the indexer acknowledgement of every batch (the token must "
        "have indexer acknowledgement enabled); false when absent",
    )


@strawberry.input
class WebhookConfigInput:
    url: str
    secret: str | None = strawberry.field(
        default=None, description="generated when absent, returned once"
    )


@strawberry.input(one_of=True)
class DestinationConfigInput:
    s3: S3ConfigInput | None = strawberry.UNSET
    datadog: DatadogConfigInput | None = strawberry.UNSET
    splunk_hec: SplunkHecConfigInput | None = strawberry.UNSET
    webhook: WebhookConfigInput | None = strawberry.UNSET

    def to_config(self) -> cfg.DestinationConfig:
        if self.s3:
            s = self.s3
            return cfg.S3Config(
                bucket=s.bucket,
                region=s.region,
                access_key_id=s.access_key_id,
                secret_access_key=s.secret_access_key,
                prefix=s.prefix,
                endpoint_url=s.endpoint_url,
            )
        if self.datadog:
            d = self.datadog
            return cfg.DatadogConfig(
                site=d.site,
                api_key=d.api_key,
                service=d.service,
                tags=d.tags,
                endpoint_url=d.endpoint_url,
            )
        if self.splunk_hec:
            h = self.splunk_hec
            return cfg.SplunkHecConfig(
                url=h.url,
                token=h.token,
                index=h.index,
                sourcetype=h.sourcetype,
                use_ack=h.use_ack,
            )
        assert self.webhook, "@oneOf guarantees exactly one kind"
        return cfg.WebhookConfig(url=self.webhook.url, secret=self.webhook.secret)


@strawberry.input
class CreateStreamingDestinationInput:
    name: str
    categories: list[EventCategory] | None = None
    config: DestinationConfigInput
    format: EventFormat | None = strawberry.field(
        default=EventFormat.NATIVE, description="the form events are delivered in"
    )


@strawberry.input
class UpdateStreamingDestinationInput:
    name: str | None = None
    categories: list[EventCategory] | None = None
    config: DestinationConfigInput | None = None
    format: EventFormat | None = strawberry.field(
        default=None, description="left out: the destination keeps its format"
    )


@strawberry.type(description="An event the destination refused for good, set aside.")
class DeadLetter:
    event_id: strawberry.ID
    status_code: int | None = strawberry.field(
        description="the destination's answer; null when it gave none"
    )
    error: str = strawberry.field(description="credentials masked")
    failed_at: datetime

    @classmethod
    def from_row(cls, row: DeadLetterRow) -> DeadLetter:
        return cls(
            event_id=strawberry.ID(str(row.event_id)),
            status_code=row.status_code,
            error=row.error,
            failed_at=row.failed_at,
        )


@strawberry.type
class StreamingDestination:
    id: strawberry.ID
    name: str
    kind: DestinationKind
    categories: list[EventCategory]
    format: EventFormat
    status: DestinationStatus
    config: JSON = strawberry.field(description="credentials masked, never returned")
    last_delivered_at: datetime | None
    lag_events: int = strawberry.field(
        description="events not yet acknowledged, counted up to 10000: 10000 means at least 10000"
    )
    last_error: str | None
    created_at: datetime

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="Events it refused for good (400, 413, 422 for that event), set aside "
        "so that the stream goes on; in ingest order, first at most 500, default 50."
    )
    async def dead_letters(self, info: Info, first: int | None = None) -> list[DeadLetter]:
        found = await resolvers.list_dead_letters(info.context, str(self.id), first)
        return [DeadLetter.from_row(r) for r in found]

    @classmethod
    def from_view(cls, view: DestinationView) -> StreamingDestination:
        row = view.row
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            kind=DestinationKind(row.kind),
            categories=[EventCategory(c) for c in row.categories],
            format=EventFormat(row.format),
            status=DestinationStatus(row.status),
            config=cast(JSON, view.masked_config),
            last_delivered_at=row.last_delivered_at,
            lag_events=view.lag_events,
            last_error=row.last_error,
            created_at=row.created_at,
        )


@strawberry.type
class CreatedStreamingDestination:
    destination: StreamingDestination
    webhook_secret: str | None

    @classmethod
    def from_created(cls, created: CreatedDestination) -> CreatedStreamingDestination:
        return cls(
            destination=StreamingDestination.from_view(created.view),
            webhook_secret=created.webhook_secret,
        )


@strawberry.type
class DeliveryTestResult:
    ok: bool
    status_code: int | None
    error: str | None
    latency_ms: float | None

    @classmethod
    def from_test(cls, test: DeliveryTest) -> DeliveryTestResult:
        return cls(
            ok=test.ok, status_code=test.status_code, error=test.error, latency_ms=test.latency_ms
        )


def _categories(values: list[EventCategory] | None) -> list[str] | None:
    return None if values is None else [c.value for c in values]


@strawberry.type
class StreamingQuery:
    @strawberry.field(extensions=streaming_admin())  # type: ignore[untyped-decorator]
    async def streaming_destinations(self, info: Info) -> list[StreamingDestination]:
        views = await resolvers.list_destinations(info.context)
        return [StreamingDestination.from_view(v) for v in views]


@strawberry.type
class StreamingMutation:
    @strawberry.mutation(extensions=streaming_admin())  # type: ignore[untyped-decorator]
    async def create_streaming_destination(
        self, info: Info, input: CreateStreamingDestinationInput
    ) -> CreatedStreamingDestination:
        created = await resolvers.create_destination(
            info.context,
            input.name,
            _categories(input.categories),
            input.config.to_config(),
            input.format.value if input.format else "NATIVE",
        )
        return CreatedStreamingDestination.from_created(created)

    @strawberry.mutation(extensions=streaming_admin())  # type: ignore[untyped-decorator]
    async def update_streaming_destination(
        self, info: Info, id: strawberry.ID, input: UpdateStreamingDestinationInput
    ) -> StreamingDestination:
        view = await resolvers.update_destination(
            info.context,
            str(id),
            input.name,
            _categories(input.categories),
            input.config.to_config() if input.config else None,
            input.format.value if input.format else None,
        )
        return StreamingDestination.from_view(view)

    @strawberry.mutation(extensions=streaming_admin())  # type: ignore[untyped-decorator]
    async def pause_streaming_destination(
        self, info: Info, id: strawberry.ID
    ) -> StreamingDestination:
        view = await resolvers.set_paused(info.context, str(id), paused=True)
        return StreamingDestination.from_view(view)

    @strawberry.mutation(extensions=streaming_admin())  # type: ignore[untyped-decorator]
    async def resume_streaming_destination(
        self, info: Info, id: strawberry.ID
    ) -> StreamingDestination:
        view = await resolvers.set_paused(info.context, str(id), paused=False)
        return StreamingDestination.from_view(view)

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        extensions=streaming_admin(),
        description="Resend from the first retained event occurred at or after `from`: the "
        "cursor moves back to just before the earliest ingest position of those events "
        "(never forward), and every event ingested after it is sent again, in ingest order. "
        "A `from` before the retention starts at the retention.",
    )
    async def replay_streaming_destination(
        self,
        info: Info,
        id: strawberry.ID,
        from_: Annotated[datetime, strawberry.argument(name="from")],
    ) -> StreamingDestination:
        view = await resolvers.replay_destination(info.context, str(id), from_)
        return StreamingDestination.from_view(view)

    @strawberry.mutation(extensions=streaming_admin())  # type: ignore[untyped-decorator]
    async def delete_streaming_destination(self, info: Info, id: strawberry.ID) -> bool:
        return await resolvers.delete_destination(info.context, str(id))

    @strawberry.mutation(extensions=streaming_admin())  # type: ignore[untyped-decorator]
    async def test_streaming_destination(self, info: Info, id: strawberry.ID) -> DeliveryTestResult:
        return DeliveryTestResult.from_test(await resolvers.test_destination(info.context, str(id)))

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        extensions=streaming_admin(),
        description="Queue the destination's dead letters to be sent again in its next "
        "round (out of order): delivered ones leave the list, refused ones stay. "
        "How many were queued now.",
    )
    async def retry_dead_letters(self, info: Info, id: strawberry.ID) -> int:
        return await resolvers.retry_dead_letters(info.context, str(id))
