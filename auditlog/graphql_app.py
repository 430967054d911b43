"""GraphQL over HTTP (and websockets) at /graphql, with bearer authentication.

Over HTTP a missing, bad or revoked token is answered with HTTP 401 before the
document is even parsed; GraphiQL is served to a browser without a token.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

from auditlog.endpoints.common import json_response, principal_of, services_of
from auditlog.errors import AuthError
from auditlog.logs import new_request_id
from auditlog.model import Principal
from auditlog.schema.context import Context
from auditlog.schema.live import encode_shared_message
from auditlog.ws_connections import LegacyWSHandler, TransportWSHandler

MAX_REQUEST_BYTES = 256 * 1024
GRAPHQL_RESPONSE = "application/graphql-response+json"


class _BodyTooLarge(Exception):
    pass


def _too_large() -> Response:
    message = f"a GraphQL request holds at most {MAX_REQUEST_BYTES} bytes"
    return json_response(
        {"errors": [{"message": message, "extensions": {"code": "QUERY_TOO_COMPLEX"}}]}, 413
    )


def _limited(receive: Any) -> Any:
    """`receive` that stops reading a request body past MAX_REQUEST_BYTES."""
    received = 0

    async def limited_receive() -> Any:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > MAX_REQUEST_BYTES:
                raise _BodyTooLarge
        return message

    return limited_receive


class AuditLogGraphQL(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler

    def encode_json(self, data: object) -> str | bytes:
        # Live events shared by identical subscriptions are serialised once; the rest
        # with orjson (a page of 500 events is megabytes; json.dumps is slow). Text,
        # not bytes: websocket clients expect text frames.
        return encode_shared_message(data) or orjson.dumps(data).decode()

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket | None
    ) -> Context:
        principal: Principal | None = request.scope.get("auditlog.principal")
        request.scope["auditlog.sub_response"] = response
        return Context(
            services=services_of(request),
            principal=principal,
            request_id=request.scope.get("auditlog.request_id") or new_request_id(),
            request=request,
            response=response,
        )

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        """GraphQL over HTTP: a client accepting application/graphql-response+json gets
        it, and a request error (nothing executed: no data, no error path) is a 400
        without a `data` entry."""
        body = await super().process_result(request, result)
        sub_response: Response | None = request.scope.get("auditlog.sub_response")
        if sub_response is None or GRAPHQL_RESPONSE not in request.headers.get("accept", ""):
            return body
        sub_response.media_type = GRAPHQL_RESPONSE
        if result.data is None and result.errors and all(e.path is None for e in result.errors):
            sub_response.status_code = 400
            body.pop("data", None)
        return body

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        response = super().create_response(response_data, sub_response)
        if sub_response.media_type == GRAPHQL_RESPONSE:
            response.headers["content-type"] = f"{GRAPHQL_RESPONSE}; charset=utf-8"
        return response

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
            await _too_large()(scope, receive, send)
            return
        # GraphiQL only: a GET that carries a query is executed, so it is authenticated.
        wants_ide = (
            request.method == "GET"
            and "query" not in request.query_params
            and "text/html" in request.headers.get("accept", "")
        )
        if not wants_ide and request.method in ("GET", "POST"):
            try:
                scope["auditlog.principal"] = await principal_of(request)
            except AuthError as exc:
                response = json_response(
                    {"errors": [{"message": str(exc), "extensions": {"code": "UNAUTHENTICATED"}}]},
                    401,
                    headers={"WWW-Authenticate": 'Bearer realm="auditlog"'},
                )
                await response(scope, receive, send)
                return
        scope.setdefault("auditlog.request_id", new_request_id())  # set by RequestContext
        try:
            await super().__call__(scope, _limited(receive), send)
        except _BodyTooLarge:  # a chunked body without Content-Length grew past the limit
            await _too_large()(scope, receive, send)
