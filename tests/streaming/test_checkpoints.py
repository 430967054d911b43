"""Signed checkpoints through every destination: after the events they cover, in each
sink's wire format, at most one an interval, retried like events, never lost to a
worker that dies."""

from __future__ import annotations

import base64
import gzip
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from auditlog.integrity.notes import Checkpoint, VerifierKey, open_checkpoint
from auditlog.runtime import Services
from auditlog.services import integrity as integrity_service
from auditlog.services.service_events import ServiceEventWriter
from auditlog.storage.integrity import read_leaf_indexes
from auditlog.streaming.delivery import DeliveryOptions
from auditlog.streaming.worker import StreamWorker, running_worker
from tests.conftest import WorkspaceKeys, event
from tests.streaming.gql import PAUSE, RESUME, create_destination, destination
from tests.streaming.receivers import (
    Receiver,
    ingest,
    wait_until,
    webhook_events,
    webhook_messages,
)
from tests.streaming.test_workers import start_worker_process

# Small reads, so the events a checkpoint covers take several rounds to deliver.
OPTIONS = DeliveryOptions(lease_seconds=4, poll_seconds=0.2, send_timeout=1.0, read_limit=100)
SHORT_INTERVAL = 3.0


@pytest.fixture
async def cp_worker(services: Services) -> AsyncIterator[StreamWorker]:
    async with running_worker(
        services.pool, services.bus, services.settings, OPTIONS, record=ServiceEventWriter()
    ) as w:
        yield w


async def seal(services: Services, workspace_id: str) -> int:
    """Seal the workspace now; its new tree size."""
    async with services.pool.acquire() as conn:
        results = await integrity_service.seal_until_caught_up(
            conn, workspace_id, services.signing_keys.current()
        )
    assert results
    return results[-1].checkpoint.tree_size


def verify(services: Services, workspace_id: str, note: str) -> Checkpoint:
    key = VerifierKey.parse(services.signing_keys.current().verifier.encode())
    checkpoint = open_checkpoint(note, [key])
    assert checkpoint.origin.endswith(f"/{workspace_id}")
    return checkpoint


def check_fields(services: Services, workspace_id: str, data: dict[str, Any]) -> Checkpoint:
    """The JSON form {"treeSize", "rootHash", "signedNote"} agrees with its verified note."""
    assert set(data) == {"treeSize", "rootHash", "signedNote"}
    assert isinstance(data["treeSize"], int)
    checkpoint = verify(services, workspace_id, data["signedNote"])
    root = base64.b64decode(data["rootHash"], validate=True)
    assert len(root) == 32 and root == checkpoint.root
    assert data["treeSize"] == checkpoint.size
    return checkpoint


async def sealed_leaves(services: Services, workspace_id: str, ids: list[str]) -> int:
    """How many leaves the tree needs to cover these events; 0 while some are not sealed."""
    async with services.pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT xid::text::bigint AS xid, seq FROM audit_events
               WHERE workspace_id = $1 AND id = ANY($2::uuid[])""",
            workspace_id,
            ids,
        )
        leaves = await read_leaf_indexes(conn, workspace_id, [(r["xid"], r["seq"]) for r in rows])
    return max(leaves.values()) + 1 if len(leaves) == len(ids) else 0


async def assert_covers(
    services: Services, workspace_id: str, ids: list[str], tree_size: int
) -> None:
    """Every one of these events is a leaf of the tree of `tree_size`."""
    needed = await sealed_leaves(services, workspace_id, ids)
    assert 0 < needed <= tree_size


async def checkpoint_cursor(services: Services, destination_id: str) -> tuple[int, Any]:
    async with services.pool.acquire() as conn:
        row = await conn.fetchrow(
            """SELECT checkpoint_size, checkpoint_delivered_at FROM stream_destinations
               WHERE id = $1::uuid""",
            destination_id,
        )
    assert row is not None
    return row["checkpoint_size"], row["checkpoint_delivered_at"]


async def cursor_reaches(services: Services, destination_id: str, size: int) -> None:
    """The checkpoint cursor moves to `size` (just after the receiver answered)."""

    async def reached() -> bool:
        return (await checkpoint_cursor(services, destination_id))[0] == size

    await wait_until(reached, within=10)


def checkpoints_of(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    return [d for kind, d in webhook_messages(receiver, secret) if kind == "audit_log.checkpoint"]


async def test_webhook_gets_the_checkpoint_signed_after_the_events_it_covers(
    workspace: WorkspaceKeys, receiver: Receiver, cp_worker: StreamWorker, services: Services
) -> None:
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/cp"}})
    dest_id, secret = created["destination"]["id"], created["webhookSecret"]
    ids = await ingest(workspace, [event("file.uploaded") for _ in range(450)])
    size = await seal(services, workspace.id)  # before delivery: the checkpoint has to wait
    await wait_until(lambda: checkpoints_of(receiver, secret))
    messages = webhook_messages(receiver, secret)
    kinds = [kind for kind, _ in messages]
    assert kinds.count("audit_log.checkpoint") == 1 and kinds.count("audit_log.events") >= 5
    (at,) = [i for i, kind in enumerate(kinds) if kind == "audit_log.checkpoint"]
    before = {e["id"] for kind, data in messages[:at] if kind == "audit_log.events" for e in data}
    assert set(ids) <= before
    data = messages[at][1]
    checkpoint = check_fields(services, workspace.id, data)
    assert checkpoint.size == size
    await assert_covers(services, workspace.id, ids, checkpoint.size)
    request = next(r for r in receiver.requests if b"audit_log.checkpoint" in r.body)
    assert json.loads(request.body) == {"type": "audit_log.checkpoint", "data": data}
    assert request.headers["webhook-id"].startswith("msg_")
    await cursor_reaches(services, dest_id, size)


async def test_splunk_hec_gets_a_checkpoint_event(
    workspace: WorkspaceKeys, receiver: Receiver, cp_worker: StreamWorker, services: Services
) -> None:
    config = {"url": receiver.url, "token": "hec-token-2", "index": "audit", "sourcetype": "mine"}
    await create_destination(workspace, {"splunkHec": config})
    ids = await ingest(workspace, [event("user.login.failed") for _ in range(250)])
    size = await seal(services, workspace.id)

    def objects() -> list[dict[str, Any]]:
        decoder, found = json.JSONDecoder(), []
        for request in receiver.requests:
            assert request.path == "/services/collector/event"
            assert request.headers["authorization"] == "Splunk hec-token-2"
            text, pos = request.body.decode(), 0
            while pos < len(text):
                obj, pos = decoder.raw_decode(text, pos)
                found.append(obj)
        return found

    def is_checkpoint(obj: dict[str, Any]) -> bool:
        return bool(obj["sourcetype"] == "auditlog:checkpoint")

    await wait_until(lambda: any(is_checkpoint(o) for o in objects()))
    found = objects()
    (at,) = [i for i, o in enumerate(found) if is_checkpoint(o)]
    assert set(ids) <= {o["event"]["id"] for o in found[:at]}
    assert all(o["sourcetype"] == "mine" for o in found[:at])
    cp = found[at]
    assert set(cp) == {"time", "host", "source", "sourcetype", "index", "event"}
    assert cp["source"] == "auditlog" and cp["index"] == "audit" and cp["host"]
    assert isinstance(cp["time"], float | int) and cp["time"] > 1.7e9
    checkpoint = check_fields(services, workspace.id, cp["event"])
    assert checkpoint.size == size
    await assert_covers(services, workspace.id, ids, checkpoint.size)


async def test_datadog_gets_a_checkpoint_entry(
    workspace: WorkspaceKeys, receiver: Receiver, cp_worker: StreamWorker, services: Services
) -> None:
    config = {
        "site": "datadoghq.eu",
        "apiKey": "dd-api-key-2",
        "service": "aibams",
        "tags": ["env:test"],
        "endpointUrl": receiver.url + "/api/v2/logs",
    }
    await create_destination(workspace, {"datadog": config})
    ids = await ingest(workspace, [event("ai.workflow.created") for _ in range(250)])
    size = await seal(services, workspace.id)

    def entries() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for request in receiver.requests:
            assert request.headers["dd-api-key"] == "dd-api-key-2"
            assert request.headers["content-encoding"] == "gzip"
            found.extend(json.loads(gzip.decompress(request.body)))
        return found

    def is_checkpoint(entry: dict[str, Any]) -> bool:
        return "kind:checkpoint" in entry["ddtags"].split(",")

    await wait_until(lambda: any(is_checkpoint(e) for e in entries()))
    found = entries()
    (at,) = [i for i, e in enumerate(found) if is_checkpoint(e)]
    assert set(ids) <= {json.loads(e["message"])["id"] for e in found[:at]}
    cp = found[at]
    assert cp["ddsource"] == "auditlog" and cp["service"] == "aibams" and cp["hostname"]
    assert cp["ddtags"] == f"env:test,workspace:{workspace.id},kind:checkpoint"
    checkpoint = verify(services, workspace.id, cp["message"])
    assert checkpoint.size == size
    await assert_covers(services, workspace.id, ids, checkpoint.size)


async def test_s3_gets_a_checkpoint_object(
    workspace: WorkspaceKeys, cp_worker: StreamWorker, s3_endpoint: str, services: Services
) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(
        Bucket="audit-cp", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    config = {
        "bucket": "audit-cp",
        "region": "eu-west-1",
        "prefix": "logs",
        "accessKeyId": "testing",
        "secretAccessKey": "testing",
        "endpointUrl": s3_endpoint,
    }
    await create_destination(workspace, {"s3": config})
    ids = await ingest(workspace, [event("file.deleted") for _ in range(250)])
    size = await seal(services, workspace.id)
    key = f"logs/workspace={workspace.id}/checkpoints/{size:020d}.checkpoint"

    def keys() -> list[str]:
        listed = s3.list_objects_v2(Bucket="audit-cp", Prefix="logs/")
        return [item["Key"] for item in listed.get("Contents", [])]

    await wait_until(lambda: key in keys())
    # Every event it covers was already in its objects when the checkpoint landed.
    delivered: set[str] = set()
    for name in keys():
        if name.endswith(".ndjson.gz"):
            raw = s3.get_object(Bucket="audit-cp", Key=name)["Body"].read()
            delivered |= {json.loads(line)["id"] for line in gzip.decompress(raw).splitlines()}
    assert set(ids) <= delivered
    assert [k for k in keys() if "/checkpoints/" in k] == [key]
    got = s3.get_object(Bucket="audit-cp", Key=key)
    assert got["ContentType"].startswith("text/plain")
    note = got["Body"].read().decode()
    checkpoint = verify(services, workspace.id, note)
    assert checkpoint.size == size
    await assert_covers(services, workspace.id, ids, checkpoint.size)


async def test_at_most_one_checkpoint_an_interval_and_only_the_latest(
    workspace: WorkspaceKeys, receiver: Receiver, services: Services
) -> None:
    options = DeliveryOptions(
        lease_seconds=4, poll_seconds=0.2, send_timeout=1.0, checkpoint_interval=SHORT_INTERVAL
    )
    async with running_worker(
        services.pool, services.bus, services.settings, options, record=ServiceEventWriter()
    ):
        created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/i"}})
        secret = created["webhookSecret"]
        await ingest(workspace, [event("file.uploaded") for _ in range(5)])
        first_size = await seal(services, workspace.id)
        await wait_until(lambda: checkpoints_of(receiver, secret))
        first_at = next(r.at for r in receiver.requests if b"audit_log.checkpoint" in r.body)
        # Two more checkpoints at once: the middle one is skipped, the last waits.
        middle = await ingest(workspace, [event("file.uploaded") for _ in range(5)])
        middle_size = await seal(services, workspace.id)
        last = await ingest(workspace, [event("file.uploaded") for _ in range(5)])
        last_size = await seal(services, workspace.id)
        assert first_size < middle_size < last_size
        await wait_until(
            lambda: set(middle + last) <= {e["id"] for e in webhook_events(receiver, secret)}
        )
        await wait_until(lambda: time.time() > first_at + SHORT_INTERVAL - 1.0, within=10)
        assert len(checkpoints_of(receiver, secret)) == 1
        await wait_until(lambda: len(checkpoints_of(receiver, secret)) == 2, within=10)
        sizes = [
            check_fields(services, workspace.id, d).size for d in checkpoints_of(receiver, secret)
        ]
        assert sizes == [first_size, last_size]
        second_at = [r.at for r in receiver.requests if b"audit_log.checkpoint" in r.body][1]
        assert second_at - first_at >= SHORT_INTERVAL - 0.1


async def test_failing_receiver_gets_the_checkpoint_after_retries(
    workspace: WorkspaceKeys, receiver: Receiver, cp_worker: StreamWorker, services: Services
) -> None:
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/f"}})
    dest_id, secret = created["destination"]["id"], created["webhookSecret"]
    ids = await ingest(workspace, [event("folder.created") for _ in range(20)])
    await wait_until(lambda: set(ids) <= {e["id"] for e in webhook_events(receiver, secret)})
    receiver.fail_first, receiver.fail_status = 3, 500
    size = await seal(services, workspace.id)
    await wait_until(lambda: receiver.failures >= 2)
    assert await checkpoint_cursor(services, dest_id) == (0, None)
    shown = await destination(workspace, dest_id)
    assert shown["lastError"].startswith("HTTP 500")
    await wait_until(lambda: checkpoints_of(receiver, secret), within=30)
    assert receiver.failures == 3
    gaps = [b - a for a, b in zip(receiver.failed_at, receiver.failed_at[1:], strict=False)]
    assert min(gaps) >= 0.4, gaps  # backed off, as a batch is
    (data,) = checkpoints_of(receiver, secret)
    assert check_fields(services, workspace.id, data).size == size
    await cursor_reaches(services, dest_id, size)
    shown = await destination(workspace, dest_id)
    assert shown["lastError"] is None and shown["status"] == "ACTIVE"


async def test_paused_destination_sends_no_checkpoint_and_categories_do_not_filter_it(
    workspace: WorkspaceKeys, receiver: Receiver, cp_worker: StreamWorker, services: Services
) -> None:
    created = await create_destination(
        workspace, {"webhook": {"url": receiver.url + "/p"}}, categories=["DATA"]
    )
    dest_id, secret = created["destination"]["id"], created["webhookSecret"]
    mixed = [event("file.uploaded" if i % 2 else "user.login.failed") for i in range(20)]
    ids = await ingest(workspace, mixed)
    data_ids = [i for i, e in zip(ids, mixed, strict=True) if e["action"] == "file.uploaded"]
    await wait_until(lambda: data_ids[-1] in {e["id"] for e in webhook_events(receiver, secret)})
    await workspace.gql(PAUSE, {"id": dest_id})
    await wait_until(lambda: not cp_worker.tasks, within=5)  # its delivery stopped
    size = await seal(services, workspace.id)
    await wait_until(lambda: time.time() > receiver.requests[-1].at + 1.5)
    assert checkpoints_of(receiver, secret) == []
    await workspace.gql(RESUME, {"id": dest_id})
    await wait_until(lambda: checkpoints_of(receiver, secret))
    (data,) = checkpoints_of(receiver, secret)
    checkpoint = check_fields(services, workspace.id, data)
    assert checkpoint.size == size
    await assert_covers(services, workspace.id, ids, checkpoint.size)  # the filtered ones too
    assert {e["category"] for e in webhook_events(receiver, secret)} == {"DATA"}


async def test_worker_killed_while_sending_the_checkpoint_loses_it_not(
    workspace: WorkspaceKeys, services: Services
) -> None:
    # Held, a checkpoint request is in flight until its sender gives up or dies.
    receiver = Receiver(hold=b'"type":"audit_log.checkpoint"')
    await receiver.start()
    data_dir: Path = services.settings.data_dir  # so its sealer signs with the same key
    first = start_worker_process(services, data_dir)
    second = None
    try:
        created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/k"}})
        dest_id, secret = created["destination"]["id"], created["webhookSecret"]
        ids = await ingest(workspace, [event("file.uploaded") for _ in range(30)])
        await wait_until(lambda: sealed_leaves(services, workspace.id, ids), within=30)
        needed = await sealed_leaves(services, workspace.id, ids)  # by the worker's sealer
        await wait_until(lambda: receiver.holding >= 1, within=30)
        # Kill it just after a fresh attempt left, which carries the latest checkpoint.
        held = receiver.holding
        await wait_until(lambda: receiver.holding > held, within=30, step=0.01)
        first.send_signal(signal.SIGKILL)
        first.wait()
        receiver.release()
        assert set(ids) <= {e["id"] for e in webhook_events(receiver, secret)}
        assert checkpoints_of(receiver, secret) == []
        assert await checkpoint_cursor(services, dest_id) == (0, None)
        second = start_worker_process(services, data_dir)
        await wait_until(lambda: checkpoints_of(receiver, secret), within=60)
        (data,) = checkpoints_of(receiver, secret)
        checkpoint = check_fields(services, workspace.id, data)
        assert checkpoint.size >= needed
        await assert_covers(services, workspace.id, ids, checkpoint.size)
        await cursor_reaches(services, dest_id, checkpoint.size)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(10)
        await receiver.stop()
