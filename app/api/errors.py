"""Domain errors and their HTTP shape: one message a person can act on, and for 422 the dotted path of each bad field."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .jsonsafe import jsonsafe


class ApiError(Exception):
    """An error the client can act on; `extra` fields join the JSON body next to `detail`."""

    status = 400

    def __init__(self, message: str, status: int | None = None, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.message = message
        self.headers = headers
        self.extra = extra
        if status is not None:
            self.status = status

    def body(self) -> dict[str, Any]:
        """Return the JSON body of this error."""
        return {"detail": self.message, **self.extra}


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class TooManyJobs(ApiError):
    status = 429


class QueueUnavailable(ApiError):
    status = 503


class FieldErrors(ApiError):
    """422 with one entry per bad field: {loc: "train.epochs", msg, type}."""

    status = 422

    def __init__(self, errors: Sequence[dict[str, Any]], message: str | None = None):
        lines = "; ".join(f"{e['loc'] or 'config'}: {e['msg']}" for e in errors)
        super().__init__(message or f"invalid study config: {lines}")
        self.errors = list(errors)

    def body(self) -> dict[str, Any]:
        """Return {detail: [field errors], message: one line a person can read}."""
        return {"detail": self.errors, "message": self.message}


def dotted(loc: Iterable[Any]) -> str:
    """Return a pydantic error location as a dotted path, e.g. ('train', 'epochs') -> 'train.epochs'."""
    return ".".join(str(part) for part in loc)


def field_errors(err: ValidationError, prefix: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Return pydantic's errors as [{loc: dotted path, msg, type}], locations under `prefix`."""
    return [{"loc": dotted([*prefix, *e["loc"]]), "msg": e["msg"], "type": e["type"]} for e in err.errors()]


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the same JSON shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(jsonsafe(exc.body()), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": dotted(e.get("loc", ())), "msg": e.get("msg", "invalid"), "type": e.get("type", "value_error")} for e in exc.errors()
        ]
        message = "invalid request: " + "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
        return JSONResponse(jsonsafe({"detail": errors, "message": message}), status_code=422)

    @app.exception_handler(DataError)
    async def _unstorable(_: Request, exc: DataError) -> JSONResponse:
        # PostgreSQL refuses what SQLite stores (NUL characters, over-long strings): the request's fault, not the server's.
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
        return JSONResponse(
            {
                "detail": [{"loc": "", "msg": reason, "type": "unstorable"}],
                "message": f"the database cannot store a value of this request: {reason}",
            },
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))
