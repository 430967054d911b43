"""OCSF destinations: Splunk HEC and Datadog receive valid OCSF objects, a format
change takes effect on the next batch and is audited like any other update."""

from __future__ import annotations

import gzip
import json
from typing import Any

from auditlog.ocsf import OCSF_VERSION
from auditlog.streaming.worker import StreamWorker
from tests.conftest import WorkspaceKeys, event
from tests.ocsf_support import assert_valid_ocsf
from tests.streaming.gql import TEST, UPDATE, create_destination, error_of
from tests.streaming.receivers import Receiver, ingest, wait_until, webhook_events

# A mix of classes: Authentication (a failure), Web Resources, User Access, Entity Management.
ACTIONS = ("user.login.failed", "file.uploaded", "workspace.user.role_changed", "mailbox.created")
FORMAT_OF = """query { streamingDestinations { id format } }"""


def _mixed(count: int) -> list[dict[str, Any]]:
    return [event(ACTIONS[i % len(ACTIONS)], metadata={"n": i}) for i in range(count)]


def _hec_objects(receiver: Receiver) -> list[dict[str, Any]]:
    decoder, found = json.JSONDecoder(), []
    for request in receiver.requests:
        text, pos = request.body.decode(), 0
        while pos < len(text):
            obj, pos = decoder.raw_decode(text, pos)
            found.append(obj)
    return found


async def test_splunk_hec_in_ocsf_gets_valid_ocsf_events(
    workspace: WorkspaceKeys, receiver: Receiver, worker: StreamWorker
) -> None:
    config = {"url": receiver.url, "token": "hec-token-1", "sourcetype": "ocsf"}
    created = await create_destination(workspace, {"splunkHec": config}, format="OCSF")
    assert created["destination"]["kind"] == "SPLUNK_HEC"
    ids = await ingest(workspace, _mixed(40))

    def events() -> list[dict[str, Any]]:
        return [o for o in _hec_objects(receiver) if o["sourcetype"] == "ocsf"]

    await wait_until(lambda: ids[-1] in {o["event"]["metadata"]["uid"] for o in events()})
    got = [o for o in events() if o["event"]["metadata"]["event_code"] in ACTIONS]
    assert [o["event"]["metadata"]["uid"] for o in got] == ids
    for obj in got:
        assert_valid_ocsf(obj["event"])
        # The envelope is unchanged: its time is the event's, in seconds.
        assert 0 <= obj["time"] * 1000 - obj["event"]["time"] < 1
    classes = {o["event"]["class_uid"] for o in got}
    assert classes == {3002, 6001, 3005, 3004}
    failed = next(o["event"] for o in got if o["event"]["class_uid"] == 3002)
    assert failed["status_id"] == 2 and failed["metadata"]["version"] == OCSF_VERSION


async def test_datadog_in_ocsf_gets_valid_ocsf_messages(
    workspace: WorkspaceKeys, receiver: Receiver, worker: StreamWorker
) -> None:
    config = {
        "site": "datadoghq.eu",
        "apiKey": "dd-api-key-1",
        "endpointUrl": receiver.url + "/api/v2/logs",
    }
    await create_destination(workspace, {"datadog": config}, format="OCSF")
    ids = await ingest(workspace, _mixed(40))

    def messages() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for request in receiver.requests:
            for entry in json.loads(gzip.decompress(request.body)):
                if "kind:checkpoint" not in entry["ddtags"]:
                    assert entry["ddsource"] == "auditlog"
                    found.append(json.loads(entry["message"]))
        return found

    await wait_until(lambda: ids[-1] in {m["metadata"]["uid"] for m in messages()})
    got = [m for m in messages() if m["metadata"]["event_code"] in ACTIONS]
    assert [m["metadata"]["uid"] for m in got] == ids
    for message in got:
        assert_valid_ocsf(message)


async def test_changing_the_format_applies_to_the_next_batch_and_is_audited(
    workspace: WorkspaceKeys, receiver: Receiver, worker: StreamWorker
) -> None:
    created = await create_destination(workspace, {"webhook": {"url": receiver.url + "/h"}})
    secret, dest_id = created["webhookSecret"], created["destination"]["id"]
    (native_id,) = await ingest(workspace, [event("file.deleted")])
    await wait_until(lambda: native_id in {e.get("id") for e in webhook_events(receiver, secret)})
    listed = (await workspace.gql(FORMAT_OF))["data"]["streamingDestinations"]
    assert listed == [{"id": dest_id, "format": "NATIVE"}]

    body = await workspace.gql(UPDATE, {"id": dest_id, "input": {"format": "OCSF"}})
    assert "errors" not in body, body
    (ocsf_id,) = await ingest(workspace, [event("file.deleted")])

    def ocsf_uids() -> set[str]:
        received = webhook_events(receiver, secret)
        return {e["metadata"]["uid"] for e in received if "class_uid" in e}

    await wait_until(lambda: ocsf_id in ocsf_uids())
    received = webhook_events(receiver, secret)
    (delivered,) = [e for e in received if e.get("metadata", {}).get("uid") == ocsf_id]
    # Everything after the change is OCSF, the update's own audit event too.
    after = received[next(i for i, e in enumerate(received) if e.get("id") == native_id) + 1 :]
    assert after and all("class_uid" in e for e in after)
    assert_valid_ocsf(delivered)
    assert (delivered["class_uid"], delivered["activity_id"]) == (6001, 4)

    # An update that leaves the format out keeps it; a bad value is refused.
    await workspace.gql(UPDATE, {"id": dest_id, "input": {"name": "renamed"}})
    listed = (await workspace.gql(FORMAT_OF))["data"]["streamingDestinations"]
    assert listed == [{"id": dest_id, "format": "OCSF"}]
    assert error_of(await workspace.gql(UPDATE, {"id": dest_id, "input": {"format": "CEF"}}))

    audit = await workspace.gql(
        '{ auditEvents(filter: {actions: ["audit_log.stream.*"]}, first: 10) '
        "{ edges { node { action payload } } } }"
    )
    nodes = [e["node"] for e in audit["data"]["auditEvents"]["edges"]]
    assert [n["action"] for n in nodes] == [
        "audit_log.stream.updated",
        "audit_log.stream.updated",
        "audit_log.stream.created",
    ]
    renamed, to_ocsf, made = (n["payload"] for n in nodes)
    assert to_ocsf["metadata"]["changed"] == ["format"]
    assert to_ocsf["metadata"]["format"] == "OCSF"
    assert to_ocsf["actor"]["type"] == "API_KEY"
    assert to_ocsf["targets"][0]["id"] == dest_id
    assert renamed["metadata"]["changed"] == ["name"] and renamed["metadata"]["format"] == "OCSF"
    assert made["metadata"]["format"] == "NATIVE"


async def test_the_test_event_of_an_ocsf_destination_is_ocsf(
    workspace: WorkspaceKeys, receiver: Receiver
) -> None:
    created = await create_destination(
        workspace, {"webhook": {"url": receiver.url + "/t"}}, format="OCSF"
    )
    result = await workspace.gql(TEST, {"id": created["destination"]["id"]})
    assert result["data"]["testStreamingDestination"]["ok"] is True
    (sent,) = webhook_events(receiver, created["webhookSecret"])
    assert_valid_ocsf(sent)
    assert sent["metadata"]["event_code"] == "audit_log.stream.test"
