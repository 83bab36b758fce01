"""Settings come from LMC_* variables; start-up creates the data directory and the database, and survives a missing Redis."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.api.main import create_app
from app.api.settings import Settings


def test_settings_from_the_environment(monkeypatch, tmp_path):
    for name in ("LMC_DATABASE_URL", "LMC_ARTIFACT_ROOT", "LMC_ANONYMOUS_READ", "LMC_MAX_EPOCHS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LMC_DATA_DIR", str(tmp_path / "data"))
    s = Settings()
    assert s.database_url == f"sqlite:///{tmp_path / 'data' / 'lmc.db'}" and s.artifact_root == tmp_path / "data" / "artifacts"
    assert s.anonymous_read is True and s.redis_url == "redis://127.0.0.1:6379/0"
    monkeypatch.setenv("LMC_DATABASE_URL", "postgres://u@db:5432/lmc")
    monkeypatch.setenv("LMC_ANONYMOUS_READ", "false")
    monkeypatch.setenv("LMC_MAX_EPOCHS", "50")
    s = Settings()
    assert s.database_url == "postgresql+psycopg://u@db:5432/lmc" and s.anonymous_read is False and s.max_epochs == 50


def test_start_up_creates_the_data_dir_and_database_even_without_redis(monkeypatch, tmp_path):
    monkeypatch.delenv("LMC_DATABASE_URL", raising=False)
    monkeypatch.delenv("LMC_ARTIFACT_ROOT", raising=False)
    monkeypatch.setenv("LMC_DATA_DIR", str(tmp_path / "fresh"))
    monkeypatch.setenv("LMC_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    monkeypatch.setenv("LMC_SYNC_INTERVAL_S", "0")
    app = create_app()
    assert not (tmp_path / "fresh").exists()  # building the app touches nothing
    with TestClient(app) as client:
        assert (tmp_path / "fresh" / "lmc.db").is_file() and (tmp_path / "fresh" / "artifacts" / "runs").is_dir()
        health = client.get("/api/health").json()
        assert health["status"] == "degraded" and health["database"]["ok"] and not health["redis"]["ok"] and health["workers"] is None
        assert client.get("/api/workers").status_code == 503
