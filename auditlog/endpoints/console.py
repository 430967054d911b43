"""The Audit Logs console: `/` and its static files under `/console/`, from the package.

The page shows untrusted event data, so every answer carries a strict
Content-Security-Policy: scripts, styles and connections only from this
origin (plus its own websocket URL for the live tail), no inline script or
style, no framing. Files are read once from the installed package at start-up
into an allow-list; a path not in it is a 404, so nothing outside the
console folder can be named.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

STATIC_PREFIX = "/console/"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# A Host header is reflected into connect-src only when it is a plain host[:port].
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str


def _walk(folder: Traversable, prefix: str = "") -> dict[str, StaticFile]:
    files: dict[str, StaticFile] = {}
    for entry in folder.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            files.update(_walk(entry, name + "/"))
            continue
        suffix = "." + entry.name.rpartition(".")[2]
        media_type = _TYPES.get(suffix) or mimetypes.guess_type(entry.name)[0]
        if media_type is None:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        files[name] = StaticFile(body, media_type, etag)
    return files


def load_console_files() -> dict[str, StaticFile]:
    """Every servable file of the console, keyed by its path below the console folder."""
    return _walk(resources.files("auditlog") / "console")


def content_security_policy(host: str | None, secure: bool) -> str:
    connect = ["'self'"]
    if host and _HOST.match(host):
        # Behind a TLS-terminating proxy the request looks like plain http while
        # the browser uses wss: a page served over http may use either.
        schemes = ["wss"] if secure else ["ws", "wss"]
        connect.extend(f"{scheme}://{host}" for scheme in schemes)
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            "connect-src " + " ".join(connect),
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def _serve(request: Request, file: StaticFile) -> Response:
    headers = {
        "Content-Security-Policy": content_security_policy(
            request.headers.get("host"), request.url.scheme in ("https", "wss")
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-cache",
        "ETag": file.etag,
    }
    if request.headers.get("if-none-match") == file.etag:
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.media_type, headers=headers)


def console_routes() -> list[BaseRoute]:
    files = load_console_files()

    async def index(request: Request) -> Response:
        return _serve(request, files["index.html"])

    async def config(request: Request) -> Response:
        # What the page credits: "dbip" while DB-IP's country database locates events.
        services = getattr(request.app.state, "services", None)
        geoip = getattr(services, "geoip", None)
        attribution = "dbip" if getattr(geoip, "attribution", None) else None
        body = orjson.dumps({"geoipAttribution": attribution})
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return _serve(request, StaticFile(body, "application/json", etag))

    async def static(request: Request) -> Response:
        file = files.get(request.path_params["path"])
        if file is None:
            return Response("not found", status_code=404, media_type="text/plain")
        return _serve(request, file)

    return [
        Route("/", index, methods=["GET"]),
        Route(STATIC_PREFIX + "config.json", config, methods=["GET"]),
        Route(STATIC_PREFIX + "{path:path}", static, methods=["GET"]),
    ]
