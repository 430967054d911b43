"""Stream delivery end to end: real receivers, a real worker, each sink's format
checked the way its consumer checks it, failures, pauses and filters."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from typing import Any

import boto3
import pytest

from auditlog.runtime import Services
from auditlog.streaming.worker import StreamWorker
from tests.conftest import WorkspaceKeys, event
from tests.streaming.gql import PAUSE, RESUME, TEST, UPDATE, create_destination, destination
from tests.streaming.receivers import Receiver, ingest, wait_until, webhook_events


async def test_webhook_gets_every_event_in_order_signed(
    workspace: WorkspaceKeys, receiver: Receiver, worker: StreamWorker, services: Services
) -> None:
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/hook"}})
    secret = created["webhookSecret"]
    ids = await ingest(workspace, [event("file.uploaded") for _ in range(1200)])
    await wait_until(lambda: ids[-1] in {e["id"] for e in webhook_events(receiver, secret)})
    received = [e for e in webhook_events(receiver, secret) if e["action"] == "file.uploaded"]
    assert [e["id"] for e in received] == ids
    async with services.pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT payload FROM audit_events WHERE workspace_id = $1 AND id = $2::uuid",
            workspace.id,
            ids[0],
        )
    assert received[0] == json.loads(stored)
    assert max(len(json.loads(r.body)["data"]) for r in receiver.requests) <= 1000
    dest = await destination(workspace, created["destination"]["id"])
    assert dest["lastDeliveredAt"] is not None and dest["status"] == "ACTIVE"


async def test_splunk_hec_gets_concatenated_events_with_its_token(
    workspace: WorkspaceKeys, receiver: Receiver, worker: StreamWorker
) -> None:
    config = {"url": receiver.url, "token": "hec-token-1", "index": "audit", "sourcetype": "aibams"}
    await create_destination(workspace, {"splunkHec": config})
    ids = await ingest(workspace, [event("user.login.failed") for _ in range(50)])

    def objects() -> list[dict[str, Any]]:
        decoder, found = json.JSONDecoder(), []
        for request in receiver.requests:
            assert request.path == "/services/collector/event"
            assert request.headers["authorization"] == "Splunk hec-token-1"
            text, pos = request.body.decode(), 0
            while pos < len(text):
                obj, pos = decoder.raw_decode(text, pos)
                found.append(obj)
        return found

    await wait_until(lambda: ids[-1] in {o["event"]["id"] for o in objects()})
    got = [o for o in objects() if o["event"]["action"] == "user.login.failed"]
    assert [o["event"]["id"] for o in got] == ids
    first = got[0]
    assert first["source"] == "auditlog" and first["sourcetype"] == "aibams"
    assert first["index"] == "audit" and first["host"]
    assert isinstance(first["time"], float | int) and first["time"] > 1.7e9
    assert all(len(r.body) <= 1_000_000 for r in receiver.requests)


async def test_datadog_gets_gzip_arrays_with_its_key(
    workspace: WorkspaceKeys, receiver: Receiver, worker: StreamWorker
) -> None:
    config = {
        "site": "datadoghq.eu",
        "apiKey": "dd-api-key-1",
        "service": "aibams",
        "tags": ["env:test"],
        "endpointUrl": receiver.url + "/api/v2/logs",
    }
    await create_destination(workspace, {"datadog": config})
    ids = await ingest(workspace, [event("ai.workflow.created") for _ in range(1500)])

    def entries() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for request in receiver.requests:
            assert request.headers["dd-api-key"] == "dd-api-key-1"
            assert request.headers["content-encoding"] == "gzip"
            batch = json.loads(gzip.decompress(request.body))
            assert isinstance(batch, list) and len(batch) <= 1000
            found.extend(batch)
        return found

    await wait_until(lambda: ids[-1] in {json.loads(e["message"])["id"] for e in entries()})
    got = [e for e in entries() if json.loads(e["message"])["action"] == "ai.workflow.created"]
    assert [json.loads(e["message"])["id"] for e in got] == ids
    assert got[0]["ddsource"] == "auditlog" and got[0]["service"] == "aibams"
    assert got[0]["ddtags"] == f"env:test,workspace:{workspace.id}"


async def test_s3_gets_gzip_ndjson_objects_under_partitioned_keys(
    workspace: WorkspaceKeys, worker: StreamWorker, s3_endpoint: str
) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(
        Bucket="audit-sink", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    config = {
        "bucket": "audit-sink",
        "region": "eu-west-1",
        "prefix": "logs/",
        "accessKeyId": "testing",
        "secretAccessKey": "testing",
        "endpointUrl": s3_endpoint.replace("127.0.0.1", "localhost"),  # a name, path-style
    }
    await create_destination(workspace, {"s3": config})
    ids = await ingest(workspace, [event("file.deleted") for _ in range(300)])

    def objects() -> dict[str, list[dict[str, Any]]]:
        listed = s3.list_objects_v2(Bucket="audit-sink", Prefix="logs/")
        out = {}
        for item in listed.get("Contents", []):
            raw = s3.get_object(Bucket="audit-sink", Key=item["Key"])["Body"].read()
            out[item["Key"]] = [json.loads(line) for line in gzip.decompress(raw).splitlines()]
        return out

    await wait_until(lambda: ids[-1] in {e["id"] for es in objects().values() for e in es})
    found = objects()
    for key, events in found.items():
        first = events[0]["occurredAt"]
        prefix = f"logs/workspace={workspace.id}/dt={first[:10]}/hour={first[11:13]}/"
        assert key.startswith(prefix) and key.endswith(".ndjson.gz"), key
    ordered = sorted(found.items())
    got = [e["id"] for _, es in ordered for e in es if e["action"] == "file.deleted"]
    assert got == ids


async def test_receiver_failing_first_requests_gets_everything_after_retries(
    workspace: WorkspaceKeys, receiver: Receiver, worker: StreamWorker
) -> None:
    receiver.fail_first, receiver.fail_headers = 3, {"Retry-After": "2"}
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/flaky"}})
    ids = await ingest(workspace, [event("folder.created") for _ in range(100)])
    dest_id = created["destination"]["id"]
    await wait_until(lambda: receiver.failures >= 1)
    await wait_until(
        lambda: ids[-1] in {e["id"] for e in webhook_events(receiver, created["webhookSecret"])},
        within=30,
    )
    got = [e["id"] for e in webhook_events(receiver, created["webhookSecret"])]
    assert [i for i in got if i in set(ids)] == ids
    assert receiver.failures == 3
    gaps = [b - a for a, b in zip(receiver.failed_at, receiver.failed_at[1:], strict=False)]
    assert min(gaps) >= 1.9, gaps  # Retry-After: 2 outweighs the first backoff steps
    dest = await destination(workspace, dest_id)
    assert dest["lastError"] is None and dest["status"] == "ACTIVE"


async def test_error_is_shown_while_retrying(
    workspace: WorkspaceKeys, receiver: Receiver, worker: StreamWorker
) -> None:
    receiver.fail_first = 1000
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/down"}})
    await ingest(workspace, [event("folder.created") for _ in range(3)])
    await wait_until(lambda: receiver.failures >= 1)

    async def shown() -> bool:
        dest = await destination(workspace, created["destination"]["id"])
        return bool(dest["lastError"]) and dest["lastError"].startswith("HTTP 503")

    await wait_until(shown, within=5)


async def test_splunk_batches_stay_within_one_megabyte(
    workspace: WorkspaceKeys, receiver: Receiver, worker: StreamWorker
) -> None:
    await create_destination(workspace, {"splunkHec": {"url": receiver.url, "token": "t"}})
    big = [event("file.uploaded", metadata={"note": "x" * 30_000}) for _ in range(80)]
    ids = await ingest(workspace, big)

    def delivered() -> list[str]:
        decoder, found = json.JSONDecoder(), []
        for request in receiver.requests:
            text, pos = request.body.decode(), 0
            while pos < len(text):
                obj, pos = decoder.raw_decode(text, pos)
                found.append(obj["event"]["id"])
        return found

    await wait_until(lambda: ids[-1] in delivered())
    assert [i for i in delivered() if i in set(ids)] == ids
    assert len(receiver.requests) >= 3
    assert all(len(r.body) <= 1_000_000 for r in receiver.requests)


async def test_refusing_receiver_marks_failing_and_update_retries_at_once(
    workspace: WorkspaceKeys, receiver: Receiver, worker: StreamWorker
) -> None:
    receiver.status = 401
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/auth"}})
    dest_id = created["destination"]["id"]
    ids = await ingest(workspace, [event("file.uploaded") for _ in range(10)])

    async def failing() -> bool:
        return (await destination(workspace, dest_id))["status"] == "FAILING"

    await wait_until(failing)
    dest = await destination(workspace, dest_id)
    assert dest["lastError"].startswith("HTTP 401") and dest["lagEvents"] >= 10
    receiver.status = 200
    body = await workspace.gql(UPDATE, {"id": dest_id, "input": {"name": "fixed"}})
    assert body["data"]["updateStreamingDestination"]["status"] == "ACTIVE"
    # The slow retry is minutes away: only the update makes this happen within seconds.
    await wait_until(
        lambda: ids[-1] in {e["id"] for e in webhook_events(receiver, created["webhookSecret"])},
        within=10,
    )


async def test_hanging_receiver_does_not_block_other_destinations(
    workspace: WorkspaceKeys, receiver: Receiver, worker: StreamWorker
) -> None:
    hanging = Receiver(hang=True)
    await hanging.start()
    try:
        await create_destination(workspace, {"webhook": {"url": hanging.url + "/stuck"}})
        created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/ok"}})
        ids = await ingest(workspace, [event("mailbox.created") for _ in range(20)])
        await wait_until(
            lambda: (
                ids[-1] in {e["id"] for e in webhook_events(receiver, created["webhookSecret"])}
            ),
            within=5,
        )
    finally:
        hanging.hang = False
        await hanging.stop()


async def test_paused_destination_keeps_its_cursor_and_loses_nothing(
    workspace: WorkspaceKeys, receiver: Receiver, worker: StreamWorker
) -> None:
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/p"}})
    dest_id, secret = created["destination"]["id"], created["webhookSecret"]
    before = await ingest(workspace, [event("file.uploaded") for _ in range(5)])
    await wait_until(lambda: before[-1] in {e["id"] for e in webhook_events(receiver, secret)})
    await workspace.gql(PAUSE, {"id": dest_id})
    await asyncio.sleep(0.3)  # a round that began before the pause has ended
    during = await ingest(workspace, [event("file.uploaded") for _ in range(40)])
    await asyncio.sleep(1.5)
    seen = {e["id"] for e in webhook_events(receiver, secret)}
    assert not seen & set(during)
    dest = await destination(workspace, dest_id)
    assert dest["status"] == "PAUSED" and dest["lagEvents"] >= 40
    await workspace.gql(RESUME, {"id": dest_id})
    await wait_until(lambda: during[-1] in {e["id"] for e in webhook_events(receiver, secret)})
    got = [e["id"] for e in webhook_events(receiver, secret)]
    assert [i for i in got if i in set(before + during)] == before + during


async def test_categories_filter_what_a_destination_gets(
    workspace: WorkspaceKeys, receiver: Receiver, worker: StreamWorker
) -> None:
    created = await create_destination(
        workspace, {"webhook": {"url": receiver.url + "/data"}}, categories=["DATA"]
    )
    secret = created["webhookSecret"]
    mixed = [event("file.uploaded" if i % 3 == 0 else "user.login.failed") for i in range(60)]
    ids = await ingest(workspace, mixed)
    data_ids = [i for i, e in zip(ids, mixed, strict=True) if e["action"] == "file.uploaded"]
    await wait_until(lambda: data_ids[-1] in {e["id"] for e in webhook_events(receiver, secret)})
    marker = await ingest(workspace, [event("folder.deleted")])
    await wait_until(lambda: marker[0] in {e["id"] for e in webhook_events(receiver, secret)})
    got = webhook_events(receiver, secret)
    assert {e["category"] for e in got} == {"DATA"}
    assert [e["id"] for e in got] == [*data_ids, marker[0]]


async def test_credentials_never_reach_errors_or_logs(
    workspace: WorkspaceKeys,
    receiver: Receiver,
    worker: StreamWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.status = 403
    token = "hec-secret-token-4242"
    created = await create_destination(
        workspace, {"splunkHec": {"url": receiver.url, "token": token}}
    )
    dest_id = created["destination"]["id"]
    await ingest(workspace, [event("file.uploaded")])

    async def failing() -> bool:
        return (await destination(workspace, dest_id))["status"] == "FAILING"

    await wait_until(failing)
    dest = await destination(workspace, dest_id)
    assert dest["lastError"].startswith("HTTP 403") and "********" in dest["lastError"]
    test = await workspace.gql(TEST, {"id": dest_id})
    assert (
        token not in str(test) and "********" in test["data"]["testStreamingDestination"]["error"]
    )
    assert token not in str(dest)
    assert caplog.records and all(token not in r.getMessage() for r in caplog.records)


async def test_resume_retries_a_failing_destination_at_once_with_its_secret_kept(
    workspace: WorkspaceKeys, receiver: Receiver, worker: StreamWorker
) -> None:
    receiver.status = 404
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/gone"}})
    dest_id, secret = created["destination"]["id"], created["webhookSecret"]
    ids = await ingest(workspace, [event("file.uploaded") for _ in range(5)])

    async def failing() -> bool:
        return (await destination(workspace, dest_id))["status"] == "FAILING"

    await wait_until(failing)
    # A new URL without a secret keeps the secret; then pause and resume.
    moved = {"config": {"webhook": {"url": receiver.url + "/moved"}}}
    await workspace.gql(PAUSE, {"id": dest_id})
    assert "errors" not in await workspace.gql(UPDATE, {"id": dest_id, "input": moved})
    receiver.status = 200
    resumed = await workspace.gql(RESUME, {"id": dest_id})
    assert resumed["data"]["resumeStreamingDestination"]["status"] == "ACTIVE"
    await wait_until(
        lambda: ids[-1] in {e["id"] for e in webhook_events(receiver, secret, "/moved")},
        within=10,
    )
