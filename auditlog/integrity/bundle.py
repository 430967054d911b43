"""Proof bundles of JSON exports: how one is written, and checking one offline.

A bundle is one JSON object,
`{"origin", "verifierKey", "checkpoint": "<signed note>", "events": [{"id",
"leafIndex", "hashes": [base64, ...]}]}`: an RFC 9162 inclusion proof of every
event of the export's files, each against the tree size of that one checkpoint.

Checking needs no network and no database: the verifier key given by the user
(never the one the bundle names) must verify the checkpoint's signature, the
bundle's origin must be the checkpoint's, and every event of every file must be
in the bundle, its leaf hash (SHA-256 of 0x00 and its RFC 8785 form) proving
its inclusion at its leaf index.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from auditlog.integrity import merkle
from auditlog.integrity.notes import Checkpoint, NoteError, VerifierKey, open_checkpoint
from auditlog.jcs import jcs_dumps


def _jcs(value: Any) -> bytes:
    """RFC 8785 (JCS) bytes of a JSON value; the one place that picks the serializer
    (ValueError or TypeError for a value JSON allows and JCS does not)."""
    return jcs_dumps(value)


# Writing, a piece at a time: a bundle of many events is streamed, never held whole.


def encode_head(origin: str, verifier_key: str, signed_note: str) -> bytes:
    return (
        b'{"origin":'
        + orjson.dumps(origin)
        + b',"verifierKey":'
        + orjson.dumps(verifier_key)
        + b',"checkpoint":'
        + orjson.dumps(signed_note)
        + b',"events":['
    )


def encode_events(entries: Iterable[tuple[str, int, Sequence[bytes]]], *, first: bool) -> bytes:
    """Events (id, leaf index, proof) of the bundle, one a line; `first`: none came before."""
    lines = [
        orjson.dumps(
            {
                "id": event_id,
                "leafIndex": leaf_index,
                "hashes": [base64.b64encode(h).decode() for h in hashes],
            }
        )
        for event_id, leaf_index, hashes in entries
    ]
    if not lines:
        return b""
    return (b"\n" if first else b",\n") + b",\n".join(lines)


def encode_tail() -> bytes:
    return b"\n]}\n"


# Checking.


@dataclass
class BundleReport:
    ok: bool = False
    checkpoint: Checkpoint | None = None
    files: int = 0
    verified: int = 0  # events of the files whose inclusion was proved
    failure: str | None = None  # the first failure, naming the event when there is one
    failing_event: str | None = None
    failed_events: int = 0
    notes: list[str] = field(default_factory=list)

    def fail(self, message: str, event_id: str | None = None) -> None:
        if self.failure is None:
            self.failure, self.failing_event = message, event_id
        if event_id is not None:
            self.failed_events += 1

    def summary(self) -> str:
        if self.ok and self.checkpoint is not None:
            cp = self.checkpoint
            root = base64.b64encode(cp.root).decode()
            return (
                f"OK: {self.verified} event(s) of {self.files} file(s) verified against the "
                f"checkpoint of {cp.origin} at tree size {cp.size} (root {root})"
            )
        text = f"FAILED: {self.failure}"
        if self.failed_events > 1:
            text += f" ({self.failed_events - 1} more event(s) fail too)"
        return "\n".join([text, *self.notes])


@dataclass(frozen=True)
class _Proof:
    leaf_index: int
    hashes: list[bytes]


def _event_texts(data: bytes, count: int) -> list[bytes] | None:
    """Each event's text in a JSON export as the service writes it ('[\\n', one event a
    line joined by ',\\n', '\\n]\\n'), or None for any other layout. JSON text holds no
    raw newline inside a value, so the split cannot cut an event."""
    if not (data.startswith(b"[\n") and data.endswith(b"\n]\n")):
        return None
    body = data[2:-3]
    texts = body.split(b",\n") if body else []
    return texts if len(texts) == count else None


def _parse_json(data: bytes) -> Any:
    """orjson where it can (several times faster); the standard parser for what orjson
    refuses and JSON allows (integers beyond 64 bits, lone surrogate escapes)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def _load_json(path: str) -> Any:
    return _parse_json(Path(path).read_bytes())


def _bundle_proofs(events: Any, report: BundleReport) -> dict[str, _Proof] | None:
    if not isinstance(events, list):
        report.fail("the bundle's events are not a list")
        return None
    proofs: dict[str, _Proof] = {}
    for n, entry in enumerate(events):
        event_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(event_id, str):
            report.fail(f"the bundle's event #{n + 1} has no id")
            return None
        leaf_index, hashes = entry.get("leafIndex"), entry.get("hashes")
        try:
            if type(leaf_index) is not int or leaf_index < 0 or not isinstance(hashes, list):
                raise ValueError
            decoded = [binascii.a2b_base64(h, strict_mode=True) for h in hashes]
            if any(len(h) != merkle.HASH_SIZE for h in decoded):
                raise ValueError
        except (TypeError, ValueError, binascii.Error):
            report.fail(
                f"event {event_id}: its bundle entry is not a leaf index and base64 hashes",
                event_id,
            )
            return None
        if event_id in proofs:
            report.fail(f"event {event_id} is in the bundle twice", event_id)
            return None
        proofs[event_id] = _Proof(leaf_index, decoded)
    return proofs


def _check_event(
    event: Any,
    where: str,
    proofs: dict[str, _Proof],
    checkpoint: Checkpoint,
    workspace_id: str | None,
    report: BundleReport,
    raw: bytes | None = None,
) -> None:
    """Check one event; `raw` is its text as the file holds it, when the file is laid out
    as the service writes it. An event whose text differs from its RFC 8785 form (a file
    reformatted since) is checked by re-serialising it."""
    event_id = event.get("id") if isinstance(event, dict) else None
    if not isinstance(event_id, str):
        report.fail(f"{where} is not an event with an id")
        return
    if workspace_id is not None and event.get("workspaceId") != workspace_id:
        report.fail(
            f"event {event_id} ({where}) is of workspace {event.get('workspaceId')!r}, "
            f"the checkpoint of workspace {workspace_id!r}",
            event_id,
        )
        return
    proof = proofs.get(event_id)
    if proof is None:
        report.fail(f"event {event_id} ({where}) is not in the bundle", event_id)
        return
    if proof.leaf_index >= checkpoint.size:
        report.fail(
            f"event {event_id} ({where}): leaf index {proof.leaf_index} is outside the "
            f"checkpoint's tree size {checkpoint.size}",
            event_id,
        )
        return
    # The exported text itself is what was hashed: no need to re-serialise it.
    if (
        raw is not None
        and _parse_json(raw) == event
        and merkle.verify_inclusion(
            merkle.leaf_hash(raw), proof.leaf_index, checkpoint.size, proof.hashes, checkpoint.root
        )
    ):
        report.verified += 1
        return
    try:
        leaf = merkle.leaf_hash(_jcs(event))
    except (ValueError, TypeError) as exc:
        report.fail(f"event {event_id} ({where}) has no RFC 8785 form: {exc}", event_id)
        return
    if not merkle.verify_inclusion(
        leaf, proof.leaf_index, checkpoint.size, proof.hashes, checkpoint.root
    ):
        report.fail(
            f"event {event_id} ({where}): its inclusion proof does not verify at leaf index "
            f"{proof.leaf_index} of tree size {checkpoint.size}: the event was altered, "
            "or its proof",
            event_id,
        )
        return
    report.verified += 1


def verify_bundle(verifier_key: str, bundle_path: str, files: list[str]) -> BundleReport:
    """Check export files against their proof bundle, offline; the report names the first
    failing event (or what else failed), or how many events verified against which checkpoint."""
    report = BundleReport(files=len(files))
    try:
        key = VerifierKey.parse(verifier_key)
    except NoteError as exc:
        report.fail(f"the verifier key does not parse: {exc}")
        return report
    try:
        bundle = _load_json(bundle_path)
    except (OSError, ValueError) as exc:
        report.fail(f"the bundle {bundle_path} is not readable JSON: {exc}")
        return report
    if not isinstance(bundle, dict) or not isinstance(bundle.get("checkpoint"), str):
        report.fail(f"the bundle {bundle_path} is not a proof bundle (no checkpoint)")
        return report
    try:
        checkpoint = open_checkpoint(bundle["checkpoint"], [key])
    except NoteError as exc:
        report.fail(f"the bundle's checkpoint does not verify with {key.encode()}: {exc}")
        named = bundle.get("verifierKey")
        if isinstance(named, str) and named != key.encode():
            report.notes.append(f"(the bundle says it was signed by {named})")
        return report
    report.checkpoint = checkpoint
    if bundle.get("origin") != checkpoint.origin:
        report.fail(
            f"the bundle's origin {bundle.get('origin')!r} is not its checkpoint's "
            f"({checkpoint.origin!r})"
        )
        return report
    proofs = _bundle_proofs(bundle.get("events"), report)
    if proofs is None:
        return report
    # An origin is <log name>/<workspace id>: every event must be of that workspace.
    workspace_id = checkpoint.origin.rpartition("/")[2] if "/" in checkpoint.origin else None
    for path in files:
        try:
            data = Path(path).read_bytes()
            events = _parse_json(data)
        except (OSError, ValueError) as exc:
            report.fail(f"the export file {path} is not readable JSON: {exc}")
            continue
        if not isinstance(events, list):
            report.fail(f"the export file {path} is not a JSON array of events")
            continue
        raws = _event_texts(data, len(events))
        for n, event in enumerate(events):
            _check_event(
                event,
                f"{path}, event #{n + 1}",
                proofs,
                checkpoint,
                workspace_id,
                report,
                raws[n] if raws is not None else None,
            )
    report.ok = report.failure is None
    return report
