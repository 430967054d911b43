"""The checkpoint-consistency script printed in docs/integrity.md works as written."""

from __future__ import annotations

import asyncio
import base64
import re
import sys
from pathlib import Path

import httpx

from auditlog.runtime import Services
from auditlog.services import integrity as svc
from tests.conftest import WorkspaceKeys, event
from tests.exports_support import create_export, download

DOC = Path(__file__).resolve().parents[1] / "docs" / "integrity.md"


def _script() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


async def _run(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_the_documented_script_checks_consistency(
    services: Services, workspace: WorkspaceKeys, tmp_path: Path
) -> None:
    signer = services.signing_keys.current()
    await workspace.ingest([event() for _ in range(5)])
    async with services.pool.acquire() as conn:
        (old,) = await svc.seal_until_caught_up(conn, workspace.id, signer)
    await workspace.ingest([event() for _ in range(300)])
    async with services.pool.acquire() as conn:
        (new,) = await svc.seal_until_caught_up(conn, workspace.id, signer)
    query = "query($a: Int!, $b: Int!) { integrity { consistencyProof(fromSize: $a, toSize: $b) } }"
    body = await workspace.gql(
        query, {"a": old.checkpoint.tree_size, "b": new.checkpoint.tree_size}
    )
    proof = body["data"]["integrity"]["consistencyProof"]
    script = tmp_path / "check.py"
    script.write_text(_script())
    (tmp_path / "held.checkpoint").write_text(old.checkpoint.signed_note)
    (tmp_path / "latest.checkpoint").write_text(new.checkpoint.signed_note)
    (tmp_path / "proof.txt").write_text("\n".join(proof) + "\n")
    files = [str(tmp_path / n) for n in ("held.checkpoint", "latest.checkpoint", "proof.txt")]
    vkey = signer.verifier.encode()
    code, out = await _run(str(script), vkey, "consistency", *files)
    assert (code, out.strip()) == (0, "consistent")

    bad = list(proof)
    raw = bytearray(base64.b64decode(bad[0]))
    raw[0] ^= 1
    bad[0] = base64.b64encode(bytes(raw)).decode()
    (tmp_path / "proof.txt").write_text("\n".join(bad) + "\n")
    code, out = await _run(str(script), vkey, "consistency", *files)
    assert code == 1 and "NOT CONSISTENT" in out

    (tmp_path / "proof.txt").write_text("\n".join(proof) + "\n")
    note = new.checkpoint.signed_note
    sig_line = note.rstrip("\n").rsplit("\n", 1)[1]
    blob = sig_line.rsplit(" ", 1)[1]
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    forged = note.replace(blob, base64.b64encode(bytes(raw)).decode())
    (tmp_path / "latest.checkpoint").write_text(forged)
    code, out = await _run(str(script), vkey, "consistency", *files)
    assert code != 0 and "InvalidSignature" in out


async def test_the_documented_script_checks_an_export(
    services: Services, workspace: WorkspaceKeys, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    metadata = {"note": "caf\u00e9 \U0001f600", "n": 1.5, "big": 1e21, "whole": 2.0}
    await workspace.ingest([event(metadata=metadata) for _ in range(30)])
    async with services.pool.acquire() as conn:
        await svc.seal_until_caught_up(conn, workspace.id, services.signing_keys.current())
    export = await create_export(workspace, "JSON", None)
    parts = []
    for f in export["files"]:
        path = tmp_path / f"part-{f['part']}.json"
        path.write_bytes((await download(http, f["url"])).content)
        parts.append(path)
    files = [str(p) for p in parts]
    bundle = tmp_path / "bundle.json"
    bundle.write_bytes((await download(http, export["proofUrl"])).content)
    script = tmp_path / "check.py"
    script.write_text(_script())
    vkey = services.signing_keys.current().verifier.encode()
    code, out = await _run(str(script), vkey, "export", str(bundle), *files)
    assert code == 0 and out.startswith("OK: 34 events included"), out

    parts[0].write_text(parts[0].read_text().replace("caf\u00e9", "cafe", 1))
    code, out = await _run(str(script), vkey, "export", str(bundle), *files)
    assert code == 1 and "FAILED: event" in out, out
