"""Tokens and roles: viewers cannot write, reads need a token when anonymous reads are off, tokens are stored hashed."""

from __future__ import annotations

import hashlib

from sqlalchemy import select

from app.api.models import ApiToken, User
from app.cli import main as lmc


def test_viewer_cannot_write_and_anonymous_cannot_either(api):
    body = {"preset": "smoke"}
    r = api.post("/api/studies", body, role="viewer")
    assert r.status_code == 403
    assert "viewer" in r.json()["detail"] and "editor" in r.json()["detail"]
    r = api.post("/api/studies", body, role=None)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert api.post("/api/gallery", {"study_id": "x", "title": "t"}, role="viewer").status_code == 403
    # ...while reading anonymously is allowed by default
    assert api.get("/api/studies").status_code == 200
    assert api.get("/api/me").json() == {"user": None, "role": None, "anonymous": True}
    assert api.get("/api/me", role="viewer").json() == {"user": "vic", "role": "viewer", "anonymous": False}


def test_reads_need_a_token_when_anonymous_read_is_off(make_app):
    api = make_app(anonymous_read=False)
    r = api.get("/api/studies")
    assert r.status_code == 401
    assert "LMC_ANONYMOUS_READ" in r.json()["detail"]
    assert api.get("/api/presets").status_code == 401
    assert api.get("/api/studies", role="viewer").status_code == 200
    assert api.get("/api/health").status_code == 200  # health stays open for probes


def test_unknown_and_revoked_tokens_get_401(api):
    assert api.client.get("/api/studies", headers={"Authorization": "Bearer lmc_not-a-token"}).status_code == 401
    r = api.post("/api/tokens", {"user": "tmp", "role": "editor"}, role="admin")
    assert r.status_code == 201
    created = r.json()
    headers = {"Authorization": f"Bearer {created['token']}"}
    assert api.client.get("/api/me", headers=headers).json()["user"] == "tmp"
    assert api.delete(f"/api/tokens/{created['id']}", role="admin").json()["revoked_at"] is not None
    assert api.client.get("/api/me", headers=headers).status_code == 401
    assert api.delete("/api/tokens/999999", role="admin").status_code == 404


def test_user_and_token_management_needs_admin(api):
    assert api.get("/api/tokens", role="editor").status_code == 403
    assert api.post("/api/tokens", {"user": "x", "role": "admin"}, role="editor").status_code == 403
    assert api.post("/api/users", {"name": "zoe"}, role="editor").status_code == 403
    r = api.post("/api/users", {"name": "zoe"}, role="admin")
    assert r.status_code == 201 and r.json()["tokens"] == 0
    assert api.post("/api/users", {"name": "zoe"}, role="admin").status_code == 409
    names = [u["name"] for u in api.get("/api/users", role="admin").json()]
    assert names == sorted(["ada", "eve", "vic", "zoe"])
    r = api.post("/api/tokens", {"user": "zoe", "role": "superuser"}, role="admin")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "body.role"


def test_tokens_are_stored_hashed_and_shown_once(api):
    r = api.post("/api/tokens", {"user": "hal", "role": "viewer"}, role="admin")
    token = r.json()["token"]
    listed = api.get("/api/tokens", role="admin").json()
    assert all("token" not in t for t in listed)
    assert token not in str(listed)
    with api.sessions() as session:
        rows = session.scalars(select(ApiToken)).all()
        stored = [str(getattr(row, col.name)) for row in rows for col in ApiToken.__table__.columns]
        assert not any(token in value for value in stored)
        hal = session.scalar(select(User).where(User.name == "hal"))
        row = session.scalar(select(ApiToken).where(ApiToken.user_id == hal.id))
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token.startswith(row.prefix) and len(row.prefix) < len(token) // 3
    for t in api.tokens.values():  # the fixture's tokens too
        assert not any(t in value for value in stored)


def test_lmc_token_create_gives_a_working_token(api, capsys):
    assert lmc(["token", "--database-url", api.settings.database_url, "create", "--user", "cli-user", "--role", "editor"]) == 0
    token = capsys.readouterr().out.strip()
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/api/me", headers=headers).json() == {"user": "cli-user", "role": "editor", "anonymous": False}
    assert lmc(["token", "--database-url", api.settings.database_url, "list"]) == 0
    listing = capsys.readouterr().out
    assert "cli-user\teditor" in listing and token not in listing
