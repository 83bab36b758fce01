"""The API process never imports torch: importing the app and building it must leave torch out of sys.modules."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_import_and_create_app_leave_torch_out():
    out = _run("""
        import sys
        import app.api.main
        app.api.main.create_app()
        loaded = [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
        assert not loaded, loaded
        print("ok")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_validating_a_study_through_the_api_leaves_torch_out(tmp_path):
    # StudyConfig's validators import lmc_core.prune.sources, which must keep its torch imports inside the functions that build masks.
    out = _run(f"""
        import sys, warnings
        warnings.filterwarnings("ignore")
        from fastapi.testclient import TestClient
        from app.api.main import create_app
        from app.api.settings import Settings
        app = create_app(Settings(data_dir={str(tmp_path)!r}, redis_url="redis://127.0.0.1:1/0", sync_interval_s=0))
        with TestClient(app) as c:
            r = c.post("/api/studies/validate", json={{"preset": "smoke", "overrides": {{"train.epochs": 3}}}})
            assert r.status_code == 200, r.text
            assert c.get("/api/presets").status_code == 200
        loaded = [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
        assert not loaded, loaded
        print("ok")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
