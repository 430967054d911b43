"""The `auditlog` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from auditlog.config import Settings
from auditlog.errors import AuditLogError, BadInputError, ConfigError, NotFoundError
from auditlog.logs import configure_from_env, log_config, log_format_from_env

if TYPE_CHECKING:
    from auditlog.runtime import Services

# The runtime, services and storage are imported by the commands that use them:
# `auditlog verify` runs on an auditor's machine and should start in a blink.

log = logging.getLogger("auditlog")

# On SIGTERM, requests in flight get this long to finish; the lifespan shutdown (a
# second or two) follows, so `serve` exits within 10 s (auditlog/server.py).
SHUTDOWN_GRACE_SECONDS = 6.0


def _run_with_services(
    settings: Settings, action: Callable[[Services], Awaitable[int]], pool_size: int = 2
) -> int:
    from auditlog.runtime import open_services

    async def main() -> int:
        async with open_services(settings, pool_size=pool_size) as services:
            return await action(services)

    return asyncio.run(main())


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from auditlog.runtime import migrate
    from auditlog.storage.database import resolve_database_url

    url = resolve_database_url(settings.database_url, settings.data_dir)
    applied = asyncio.run(migrate(url))
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


def cmd_maintain(args: argparse.Namespace, settings: Settings) -> int:
    from auditlog.integrity.keys import load_signer
    from auditlog.jobs.maintenance import run_maintenance
    from auditlog.runtime import migrate
    from auditlog.storage.database import resolve_database_url

    if not 1 <= args.batch_size <= 50_000:
        raise BadInputError("--batch-size", "must be between 1 and 50000")
    url = resolve_database_url(settings.database_url, settings.data_dir)

    signer = load_signer(settings.with_secret_key())

    async def main() -> int:
        await migrate(url)
        report = await run_maintenance(
            url,
            batch_size=args.batch_size,
            signer=signer,
            grace_days=settings.retention_grace_days,
        )
        print(report.summary())
        return 0

    return asyncio.run(main())


def cmd_workspaces(args: argparse.Namespace, settings: Settings) -> int:
    from auditlog.services import workspaces as workspace_service
    from auditlog.storage import retention as retention_store
    from auditlog.storage.database import owner_connection

    grace = settings.retention_grace_days

    async def action(services: Services) -> int:
        if args.workspaces_command in ("hold", "release"):
            return await _hold_or_release(services, args, grace)
        change = None
        if args.workspaces_command == "create":
            row = await workspace_service.create_workspace(
                services.pool, args.name, args.plan, args.retention_days
            )
            verb = "created"
        else:
            change = await workspace_service.change_plan(
                services.pool, args.name, args.plan, args.retention_days
            )
            row, verb = change.row, "updated"
        retention = f"{row.retention_days} days" if row.retention_days else "unlimited"
        print(f"workspace {row.id} {verb}: plan {row.plan}, retention {retention}")
        if change is not None and change.cut:
            async with owner_connection(services.database_url) as conn:
                # Seen now, the cut's grace starts now rather than at the next pass.
                await retention_store.observe_plan_history(conn)
                hold = await retention_store.read_latest_hold(conn, row.id)
            print(workspace_service.retention_cut_notice(change, grace, datetime.now(UTC)))
            if hold is not None and hold.action == "placed":
                print(f"workspace {row.id} is under a legal hold: nothing is purged while it lasts")
        return 0

    return _run_with_services(settings, action)


async def _hold_or_release(services: Services, args: argparse.Namespace, grace: int) -> int:
    # Holds are the owner's to write: the runtime role must never lift one.
    from auditlog.services import workspaces as workspace_service
    from auditlog.storage.database import owner_connection

    async with owner_connection(services.database_url) as conn:
        if args.workspaces_command == "hold":
            await workspace_service.place_hold(conn, services.ingestor, args.name, args.reason)
            print(
                f"legal hold placed on workspace {args.name}: no purge removes its events "
                f"until `auditlog workspaces release {args.name}`"
            )
            return 0
        placed = await workspace_service.release_hold(conn, services.ingestor, args.name)
    resume = f"after the {grace}-day grace period" if grace else "at the next maintenance pass"
    print(
        f"legal hold on workspace {args.name} released (placed {placed.at:%Y-%m-%d %H:%M} UTC: "
        f"{placed.reason}); purges resume {resume}"
    )
    return 0


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    from auditlog.services import keys as key_service

    async def action(services: Services) -> int:
        if args.keys_command == "revoke":
            row = await key_service.revoke_key(
                services.pool, services.ingestor, args.key_id, bus=services.bus
            )
            print(f"revoked {row.id}")
            return 0
        if args.platform and args.workspace:
            raise BadInputError("--platform", "use either --workspace or --platform")
        if not args.platform and not args.workspace:
            raise BadInputError("--workspace", "is required (or --platform for an ingest key)")
        role = args.role or ("ingest" if args.platform else None)
        if role is None:
            raise BadInputError("--role", "is required: owner, admin, member or ingest")
        created = await key_service.create_key(
            services.pool,
            services.ingestor,
            workspace_id=None if args.platform else args.workspace,
            role=role,
            name=args.name,
        )
        if args.json:
            print(json.dumps({"id": created.id, "key": created.key}))
        else:
            scope = "every workspace" if created.workspace_id is None else created.workspace_id
            print(f"created key {created.id} ({created.role}, {scope}); it is shown only once:")
            print(created.key)
        return 0

    return _run_with_services(settings, action)


def _exit_normally(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from auditlog.access_log import redact_access_log
    from auditlog.app import create_app
    from auditlog.integrity.keys import load_signer
    from auditlog.metrics import prepare_multiprocess
    from auditlog.server import uvicorn_options
    from auditlog.storage.database import resolve_database_url

    # A bad signing key stops the start here, with one line naming it, before any server.
    load_signer(settings.with_secret_key())

    redact_access_log()  # create_app does it again in each process of `--workers N`

    if args.demo:
        from auditlog.serve_demo import prepare_demo

        key = asyncio.run(prepare_demo(settings))
        base = f"http://{args.host}:{args.port}"
        print(f"demo workspace 'demo' ready; console {base}/  GraphQL {base}/graphql")
        print(f"admin key for workspace demo: {key}", flush=True)
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete; turning
    # that into a normal exit lets atexit stop the embedded PostgreSQL.
    signal.signal(signal.SIGTERM, _exit_normally)
    # Graceful shutdown on SIGTERM: websockets closed with 1001, requests finished.
    options = uvicorn_options(
        args.host,
        args.port,
        args.log_level,
        ws_deflate=args.ws_deflate,
        shutdown_grace=args.shutdown_grace,
    )
    # Each process of --workers N configures its logging from this, as this one did.
    options["log_config"] = log_config(log_format_from_env(), args.log_level.upper())
    # Before any worker process imports prometheus-client (they inherit the variable).
    prepare_multiprocess(workers=args.workers)
    if args.workers == 1:
        uvicorn.run(create_app(settings, background=not args.no_background), **options)
        return 0
    # Several processes: each builds its app from the environment, so this one
    # resolves the database (starting the embedded one if needed) and the secret
    # key once and hands them down.
    settings = settings.with_secret_key()
    os.environ["DATABASE_URL"] = resolve_database_url(settings.database_url, settings.data_dir)
    os.environ["AUDITLOG_SECRET_KEY"] = settings.secret_key
    os.environ["AUDITLOG_BACKGROUND"] = "0" if args.no_background else "1"
    uvicorn.run("auditlog.app:create_app_from_env", factory=True, workers=args.workers, **options)
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from auditlog.jobs.sealer import Sealer
    from auditlog.services.service_events import ServiceEventWriter
    from auditlog.streaming.delivery import DeliveryOptions
    from auditlog.streaming.worker import StreamWorker

    options = DeliveryOptions(
        lease_seconds=args.lease_seconds,
        send_timeout=args.send_timeout,
        ack_timeout=args.ack_timeout,
    )

    async def action(services: Services) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        worker = StreamWorker(
            services.pool,
            services.bus,
            services.settings,
            options=options,
            record=ServiceEventWriter(),
        )
        sealer = Sealer(
            services.pool, services.signing_keys, interval=services.settings.seal_interval_seconds
        )
        async with sealer.running():
            await worker.run(stop)
        return 0

    return _run_with_services(settings, action, pool_size=10)


def cmd_export_schema(args: argparse.Namespace, settings: Settings) -> int:
    from auditlog.resolvers.root import schema

    print(schema.as_str())
    return 0


def cmd_integrity(args: argparse.Namespace, settings: Settings) -> int:
    from auditlog.integrity.keys import load_signer, rotate_signing_key
    from auditlog.runtime import migrate
    from auditlog.storage import integrity as integrity_store
    from auditlog.storage.database import owner_connection, resolve_database_url

    settings = settings.with_secret_key()
    if args.integrity_command == "verifier-key":
        print(load_signer(settings).verifier.encode())
        return 0
    url = resolve_database_url(settings.database_url, settings.data_dir)

    async def rotate() -> int:
        await migrate(url)
        async with owner_connection(url) as conn:
            # The old key is listed before it stops signing, the new one before it starts.
            await integrity_store.register_verifier_key(
                conn, load_signer(settings).verifier.encode()
            )
            old, new = rotate_signing_key(settings)
            await integrity_store.register_verifier_key(conn, new.verifier.encode())
        print(f"retired verifier key (still listed, still verifies): {old.verifier.encode()}")
        print(f"new verifier key: {new.verifier.encode()}")
        return 0

    return asyncio.run(rotate())


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from auditlog.storage.database import resolve_database_url

    if args.database:
        from auditlog.services.integrity_check import check_database

        url = resolve_database_url(settings.database_url, settings.data_dir)
        report = asyncio.run(check_database(url, settings.log_name))
        print(report.summary())
        return 0 if report.ok else 1
    from auditlog.integrity.bundle import verify_bundle

    if not args.verifier_key or not args.bundle or not args.files:
        raise BadInputError(
            "verify", "give --verifier-key KEY BUNDLE EXPORT_FILE..., or --database"
        )
    result = verify_bundle(args.verifier_key, args.bundle, args.files)
    print(result.summary())
    return 0 if result.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auditlog", description="AIBAMS audit log service")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API (GraphQL, ingest, console, health)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--demo", action="store_true", help="create workspace 'demo' with events")
    serve.add_argument(
        "--no-background",
        action="store_true",
        help="run no stream workers or maintenance in this process",
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes (without REDIS_URL, live tail reaches other processes' "
        "events by polling, within a second)",
    )
    serve.add_argument(
        "--ws-deflate",
        action="store_true",
        help="accept websocket compression (permessage-deflate): less bandwidth for "
        "live tail subscribers, one compression per subscriber per event",
    )
    serve.add_argument(
        "--shutdown-grace",
        type=float,
        default=SHUTDOWN_GRACE_SECONDS,
        help="on SIGTERM, seconds requests in flight get to finish before they are cancelled",
    )
    serve.set_defaults(handler=cmd_serve)

    worker = sub.add_parser("worker", help="run stream delivery workers only (run many to scale)")
    worker.add_argument(
        "--lease-seconds", type=float, default=30.0, help="how long a dead worker holds a lease"
    )
    worker.add_argument("--send-timeout", type=float, default=10.0)
    worker.add_argument(
        "--ack-timeout",
        type=float,
        default=60.0,
        help="how long to wait for a Splunk indexer acknowledgement before resending (useAck)",
    )
    worker.set_defaults(handler=cmd_worker)

    sub.add_parser("migrate", help="apply schema migrations").set_defaults(handler=cmd_migrate)
    sub.add_parser("export-schema", help="print the GraphQL SDL").set_defaults(
        handler=cmd_export_schema
    )

    maintain = sub.add_parser(
        "maintain", help="one pass: partitions ahead, retention purge (see docs/retention.md)"
    )
    maintain.add_argument(
        "--batch-size", type=int, default=5000, help="events deleted per short transaction"
    )
    maintain.set_defaults(handler=cmd_maintain)

    ws = sub.add_parser("workspaces", help="create workspaces, change plans, legal holds")
    ws_sub = ws.add_subparsers(dest="workspaces_command", required=True)
    for name in ("create", "set-plan"):
        p = ws_sub.add_parser(name)
        p.add_argument("name")
        p.add_argument(
            "--plan",
            required=True,
            type=str.lower,
            choices=["early_access", "professional", "enterprise"],
        )
        p.add_argument("--retention-days", type=int, default=None)
    hold = ws_sub.add_parser(
        "hold", help="place a legal hold: no purge removes the workspace's events"
    )
    hold.add_argument("name")
    hold.add_argument("--reason", required=True, help="why (1 to 500 characters; recorded)")
    ws_sub.add_parser("release", help="lift the workspace's legal hold").add_argument("name")
    ws.set_defaults(handler=cmd_workspaces)

    keys = sub.add_parser("keys", help="create and revoke API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create")
    create.add_argument("--workspace")
    create.add_argument("--platform", action="store_true", help="an ingest key for every workspace")
    create.add_argument(
        "--role",
        choices=["owner", "admin", "member", "ingest"],
        help="required with --workspace; a --platform key is an ingest key",
    )
    create.add_argument("--name")
    create.add_argument("--json", action="store_true")
    revoke = keys_sub.add_parser("revoke")
    revoke.add_argument("key_id")
    keys.set_defaults(handler=cmd_keys)

    integrity = sub.add_parser("integrity", help="the checkpoint signing key")
    integrity_sub = integrity.add_subparsers(dest="integrity_command", required=True)
    integrity_sub.add_parser("verifier-key", help="print the verifier key of the signing key")
    integrity_sub.add_parser(
        "rotate-key", help="sign with a new key from now on; old verifier keys stay listed"
    )
    integrity.set_defaults(handler=cmd_integrity)

    verify = sub.add_parser(
        "verify",
        help="check an export against its proof bundle offline, or the database's trees",
    )
    verify.add_argument("--verifier-key", help="the log's verifier key (signed-note form)")
    verify.add_argument(
        "--database", action="store_true", help="recompute every workspace's tree from its events"
    )
    verify.add_argument("bundle", nargs="?", help="the export's proof bundle (JSON)")
    verify.add_argument("files", nargs="*", help="the export's JSON files")
    verify.set_defaults(handler=cmd_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_from_env()  # AUDITLOG_LOG_FORMAT: text or json
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        handler: Callable[[argparse.Namespace, Settings], int] = args.handler
        return handler(args, settings)
    except (BadInputError, NotFoundError, ConfigError) as exc:
        print(f"auditlog: {exc}", file=sys.stderr)
        return 2
    except AuditLogError as exc:
        print(f"auditlog: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
