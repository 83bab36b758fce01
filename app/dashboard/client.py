"""The one module that talks to the LMC Lab API: httpx with timeouts, every failure turned into a message a person can read.

A Dash app is bound to its API once, when it is built (`bind`, on its Flask server); pages and callbacks obtain a client
per request with `api(token)`, which carries the visitor's token: no module holds a client or an API address.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx
from flask import Flask, current_app

CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 30.0


class ApiError(Exception):
    """A failed API call: the API's own message, the HTTP status (0 when the API did not answer) and any field errors."""

    def __init__(self, message: str, status: int = 0, fields: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.fields = fields or []


def message_of(response: httpx.Response) -> tuple[str, list[dict[str, Any]]]:
    """Return (one line for people, field errors) from an error response in the API's shape."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:300] or response.reason_phrase}", []
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list):  # 422: {detail: [{loc, msg, type}], message}
            return str(body.get("message") or "; ".join(f"{e.get('loc')}: {e.get('msg')}" for e in detail)), detail
        if detail:
            return str(detail), []
    return f"HTTP {response.status_code}", []


_POOL_LOCK = threading.Lock()
_POOLS: dict[str, httpx.Client] = {}


def _pool(base_url: str) -> httpx.Client:
    """Return the process's connection pool for `base_url`.

    httpx.request builds a client (and an SSL context) per call: about 40 ms each on the team's machines against
    2 ms on a kept-alive connection, and a study page makes a dozen calls. httpx.Client is thread-safe, so Dash's
    request threads share one; tokens travel per request, never in the pool.
    """
    with _POOL_LOCK:
        pool = _POOLS.get(base_url)
        if pool is None:
            # A jar that refuses every cookie: one visitor's session must never ride on another's request.
            jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
            pool = _POOLS[base_url] = httpx.Client(cookies=jar, limits=httpx.Limits(max_connections=32, max_keepalive_connections=16))
        return pool


@dataclass
class Client:
    """A thin API client; `token` (optional) is sent as a Bearer token with every call."""

    base_url: str
    token: str | None = None
    timeout: httpx.Timeout = field(default_factory=lambda: httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(
        self, method: str, path: str, *, params: Any = None, json: Any = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """Return the response to `method path` (2xx or 304), raising ApiError with the API's message otherwise."""
        url = self.base_url.rstrip("/") + path
        try:
            r = _pool(self.base_url).request(
                method, url, params=params, json=json, headers={**self._headers(), **(headers or {})}, timeout=self.timeout
            )
        except httpx.TimeoutException:
            raise ApiError(f"the API at {self.base_url} did not answer {method} {path} in time") from None
        except httpx.HTTPError as err:
            raise ApiError(f"cannot reach the API at {self.base_url} ({err.__class__.__name__}); is `lmc up` running?") from None
        if r.status_code >= 400:
            msg, fields = message_of(r)
            if r.status_code == 401 and self.token:
                msg = f"{msg} (the token in the header was refused: check it or clear it)"
            raise ApiError(msg, r.status_code, fields)
        return r

    def get(self, path: str, **params: Any) -> Any:
        """Return the JSON of GET `path` (None-valued params are left out)."""
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def post(self, path: str, body: Any = None) -> Any:
        """Return the JSON of POST `path` (None for an empty answer)."""
        r = self.request("POST", path, json=body)
        return r.json() if r.content else None

    def patch(self, path: str, body: Any) -> Any:
        """Return the JSON of PATCH `path`."""
        return self.request("PATCH", path, json=body).json()

    def delete(self, path: str) -> Any:
        """Return the JSON of DELETE `path` (None for 204)."""
        r = self.request("DELETE", path)
        return r.json() if r.content else None

    def get_bytes(self, path: str, **params: Any) -> bytes:
        """Return the body of GET `path` as bytes (npz and other files)."""
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).content

    # ---- the calls the pages make, named after what they return

    def me(self) -> dict[str, Any]:
        """Return {user, role, anonymous} for the current token."""
        return self.get("/api/me")

    def health(self) -> dict[str, Any]:
        """Return the service's health (database, Redis, workers, version)."""
        return self.get("/api/health")

    def studies(self, **params: Any) -> dict[str, Any]:
        """Return one page of studies {data, count, limit, offset}."""
        return self.get("/api/studies", **params)

    def study(self, study_id: str) -> dict[str, Any]:
        """Return one study with its config and progress."""
        return self.get(f"/api/studies/{study_id}")

    def progress(self, study_id: str) -> dict[str, Any]:
        """Return a study's live progress."""
        return self.get(f"/api/studies/{study_id}/progress")

    def jobs(self, study_id: str) -> list[dict[str, Any]]:
        """Return a study's stage jobs."""
        return self.get(f"/api/studies/{study_id}/jobs")

    def results(self, study_id: str) -> dict[str, Any]:
        """Return a study's summary tables."""
        return self.get(f"/api/studies/{study_id}/results")

    def figures_index(self, study_id: str) -> dict[str, Any]:
        """Return the figures a study can draw now: {study_id, figures: {figure name: stage keys}, stage_refs: {figure name:
        the API's readings of those keys}}."""
        return self.get(f"/api/studies/{study_id}/figures")

    def figure(self, study_id: str, name: str, **params: Any) -> dict[str, Any]:
        """Return the figure-ready JSON of one figure (typed arrays unless encoding='list')."""
        return self.get(f"/api/studies/{study_id}/figures/{name}", **params)

    def artifacts(self, study_id: str) -> list[dict[str, Any]]:
        """Return the files of a study's finished stages."""
        return self.get(f"/api/studies/{study_id}/artifacts")

    def stage_info(self, study_id: str, stage: str) -> dict[str, Any]:
        """Return a finished stage's stage.json."""
        return self.get(f"/api/studies/{study_id}/stages/info", stage=stage)

    def schema(self) -> dict[str, Any]:
        """Return the JSON Schema of a study config."""
        return self.get("/api/schema/study")

    def presets(self) -> list[dict[str, Any]]:
        """Return every preset with its full config."""
        return self.get("/api/presets")

    def validate(self, body: dict[str, Any]) -> dict[str, Any]:
        """Return the API's verdict on a study body (raises ApiError with field errors when invalid)."""
        return self.post("/api/studies/validate", body)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create and queue a study; return it."""
        return self.post("/api/studies", body)

    def clone(self, study_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create and queue a copy of a study with edits; return the new study."""
        return self.post(f"/api/studies/{study_id}/clone", body)

    def retry(self, study_id: str, queue: str | None = None) -> dict[str, Any]:
        """Run a failed or cancelled study again in place (finished stages are reused); return it."""
        return self.post(f"/api/studies/{study_id}/retry", {"queue": queue} if queue else None)

    def queues(self) -> list[dict[str, Any]]:
        """Return the queues a study may name, each with its live workers and waiting jobs."""
        return self.get("/api/queues")

    def cancel(self, study_id: str) -> dict[str, Any]:
        """Cancel a queued or running study."""
        return self.post(f"/api/studies/{study_id}/cancel")

    def update_study(self, study_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Rename, retag or (un)archive a study."""
        return self.patch(f"/api/studies/{study_id}", body)

    def gallery(self, **params: Any) -> dict[str, Any]:
        """Return one page of gallery entries."""
        return self.get("/api/gallery", **params)

    def entry(self, entry_id: str) -> dict[str, Any]:
        """Return one gallery entry."""
        return self.get(f"/api/gallery/{entry_id}")

    def publish(self, body: dict[str, Any]) -> dict[str, Any]:
        """Publish a figure or result to the gallery; return the entry (its id is the permalink)."""
        return self.post("/api/gallery", body)

    def star(self, entry_id: str, on: bool) -> dict[str, Any]:
        """Star or unstar an entry; return it."""
        return self.post(f"/api/gallery/{entry_id}/star") if on else self.delete(f"/api/gallery/{entry_id}/star")

    def thumbnail(self, entry_id: str, etag: str | None = None) -> tuple[bytes | None, str | None]:
        """Return (PNG bytes, ETag) of an entry's thumbnail; the bytes are None when it is unchanged since `etag` (304)."""
        r = self.request("GET", f"/api/gallery/{entry_id}/thumbnail.png", headers={"If-None-Match": etag} if etag else None)
        return (None if r.status_code == 304 else r.content), r.headers.get("etag")

    def arrays(self, study_id: str, kind: str, stage: str | None = None) -> bytes:
        """Return a stage's arrays as npz bytes (kind: path, surface or hessian)."""
        return self.get_bytes(f"/api/studies/{study_id}/arrays/{kind}", stage=stage)


class Api:
    """Builds a Client per request with the visitor's token: the token lives in the browser, never on the server."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def __call__(self, token: str | None = None) -> Client:
        return Client(self.base_url, token or None)


EXTENSION = "lmc_api"  # the key of the bound Api in the Flask server's `extensions`


def bind(server: Flask, base_url: str) -> Api:
    """Bind the API at `base_url` to a Dash app's Flask server, where `api` finds it during each request; return the Api."""
    bound = server.extensions[EXTENSION] = Api(base_url)
    return bound


def api(token: str | None = None) -> Client:
    """Return a client of the API bound to the app serving the current request, sending `token` (None: anonymous).

    Raises RuntimeError outside a request of a bound app (Flask's application context).
    """
    try:
        bound = current_app.extensions[EXTENSION]
    except KeyError:
        raise RuntimeError("this Dash app is bound to no API: build it with app.dashboard.create_dash(api_url)") from None
    return bound(token)
