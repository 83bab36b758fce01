"""The OpenAPI document, with the token marked optional where anonymous reads are allowed.

FastAPI lists a security scheme as required whenever a route depends on it, even with auto_error=False; clients
and fuzzers would then believe every read needs a token. OpenAPI spells "optional" as an empty alternative: [{}, ...].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from . import deps


def _calls(dependant: Dependant) -> set[Callable[..., Any]]:
    out = {dependant.call} if dependant.call is not None else set()
    for sub in dependant.dependencies:
        out |= _calls(sub)
    return out


def token_optional(route: APIRoute, anonymous_read: bool) -> bool:
    """Return True when the route serves callers without a token: never for writes, for reads when anonymous reads are on."""
    calls = _calls(route.dependant)
    if deps.editor in calls or deps.admin in calls:
        return False
    return anonymous_read or deps.reader not in calls  # e.g. /api/me only asks who is calling


def install(app: FastAPI, routers: list[tuple[str, APIRouter]], anonymous_read: bool) -> None:
    """Make app.openapi() mark the token optional on the routes anonymous callers may use (`routers`: (prefix, router) as included).

    FastAPI 0.165 includes routers lazily, so the routes are read from the routers themselves, not from app.routes.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for prefix, router in routers:
            for route in router.routes:
                if isinstance(route, APIRoute) and route.include_in_schema:
                    _relax(schema, prefix, route, anonymous_read)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _relax(schema: dict[str, Any], prefix: str, route: APIRoute, anonymous_read: bool) -> None:
    if not token_optional(route, anonymous_read):
        return
    for method in route.methods or ():
        op = schema["paths"].get(prefix + route.path_format, {}).get(method.lower())
        if op and op.get("security") and {} not in op["security"]:
            op["security"] = [{}, *op["security"]]
