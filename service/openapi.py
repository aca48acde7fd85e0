"""/docs.json as BentoML writes it, completed: the model routes' bodies required, their error statuses listed,
and written in OpenAPI 3.0's own terms (BentoML's document says 3.0.2 but uses 3.1's null type)."""

from __future__ import annotations

import json
from typing import Any

from .errors import STATUS
from .requests import PARSERS


def openapi_30_nullable(node: Any) -> Any:
    """`node` with pydantic's `anyOf: [X, {"type": "null"}]` written as OpenAPI 3.0 says it: X with
    `nullable: true`. /docs.json is OpenAPI 3.0.2, which has no "null" type, so its clients (code
    generators, schemathesis) would take a null, which the API accepts, for an error."""
    if isinstance(node, list):
        return [openapi_30_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: openapi_30_nullable(value) for key, value in node.items()}
    options = node.get("anyOf")
    if not isinstance(options, list) or {"type": "null"} not in options:
        return node
    rest = [option for option in options if option != {"type": "null"}]
    del node["anyOf"]
    if len(rest) > 1:
        node["anyOf"] = rest
    elif "$ref" in rest[0]:  # in 3.0 a $ref's siblings are ignored, so wrap it
        node["allOf"] = rest
    else:
        node = {**rest[0], **node}
    return node | {"nullable": True}


# Error statuses of /classify and /predict, added to BentoML's OpenAPI document (it lists 400, 404 and 500).
EXTRA_RESPONSES = {
    "body_timeout": "The body did not arrive within the body deadline; the connection is closed",
    "too_large": "Too many texts, a text too long, or more estimated work than GAZE_MAX_REQUEST_COST_MS (maps of "
    "many long texts, attributions of many texts); the message gives the limit",
    "unsupported_media_type": "Content-Type is not application/json",
    "too_many_requests": "Too many requests in flight; retry after Retry-After seconds",
    "overloaded": "The batch queue is full, too many answered bytes wait for slow clients, or the service is not "
    "ready; retry after Retry-After seconds",
    "timeout": "The request took longer than the service timeout",
}
UNAUTHORIZED = "No API key, or a wrong one: send `Authorization: Bearer <key>` (the service has GAZE_API_KEY set)"


async def serve_docs(app, scope, receive, send, *, bearer: bool = False) -> None:
    """Pass /docs.json through `app`, adding the statuses of /classify and /predict that BentoML does not list
    and, with an API key (`bearer`), the scheme those routes need and their 401."""
    start: dict = {}
    chunks: list[bytes] = []

    async def capture(message):
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, capture)
    body = b"".join(chunks)
    if start.get("status") == 200:
        spec = json.loads(body)
        components = spec.get("components", {}).get("schemas", {})
        for path in PARSERS:
            operation = spec.get("paths", {}).get(path, {}).get("post", {})
            if "requestBody" in operation:  # a missing body gets 415 or 400
                operation["requestBody"]["required"] = True
                # BentoML's inline copy of the request schema keeps only the first type of a union (so
                # /predict's "inputs" lost its list form, and optional fields their null): use the full one.
                content = operation["requestBody"].get("content", {}).get("application/json", {})
                title = content.get("schema", {}).get("title")
                if title in components:
                    content["schema"] = components[title]
            error_schema = {"$ref": "#/components/schemas/InvalidArgument"}
            extra = EXTRA_RESPONSES | ({"unauthorized": UNAUTHORIZED} if bearer else {})
            if bearer and operation:
                operation["security"] = [{"apiKey": []}]
            for kind, description in extra.items():
                operation.get("responses", {}).setdefault(
                    str(STATUS[kind]),
                    {"description": description, "content": {"application/json": {"schema": error_schema}}},
                )
        if bearer:
            scheme = {
                "type": "http",
                "scheme": "bearer",
                "description": "GAZE_API_KEY, as `Authorization: Bearer <key>`",
            }
            spec.setdefault("components", {}).setdefault("securitySchemes", {})["apiKey"] = scheme
        body = json.dumps(openapi_30_nullable(spec)).encode("utf-8")
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": start.get("status", 500), "headers": headers})
    await send({"type": "http.response.body", "body": body})
