"""The dashboard's API client: one kept-alive pool per API, shared by every visitor, that never carries state between them."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.dashboard.client import ApiError, Client


@pytest.fixture
def api():
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn speaks

        def do_GET(self):
            seen.append({"auth": self.headers.get("Authorization"), "cookie": self.headers.get("Cookie"), "peer": self.client_address})
            status, body = (404, {"detail": "study nope not found"}) if "nope" in self.path else (200, {"ok": True})
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Set-Cookie", "session=visitor-a; Path=/")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    srv.shutdown()


def test_tokens_and_cookies_never_cross_visitors(api):
    url, seen = api
    Client(url, "token-a").get("/api/me")
    Client(url, None).get("/api/me")
    Client(url, "token-b").get("/api/me")
    assert [s["auth"] for s in seen] == ["Bearer token-a", None, "Bearer token-b"]
    assert all(s["cookie"] is None for s in seen), "a cookie set for one visitor was sent with another's request"


def test_calls_reuse_one_connection(api):
    url, seen = api
    for _ in range(5):
        Client(url).get("/api/me")
    assert len({s["peer"] for s in seen}) == 1


def test_error_carries_the_api_message(api):
    url, _ = api
    with pytest.raises(ApiError) as err:
        Client(url).get("/api/studies/nope")
    assert err.value.status == 404 and "study nope not found" in err.value.message
