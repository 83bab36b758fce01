"""What the dashboard's server sends before any callback: the page shell and plotly.js."""

from __future__ import annotations

from pathlib import Path

import plotly

from app.dashboard import create_dash, routes


def test_page_starts_plotly_at_once_from_an_immutable_url():
    server = create_dash("http://127.0.0.1:9").server.test_client()
    page = server.get("/study/abc?tab=landscape").get_data(as_text=True)
    head = page.split("</head>")[0]
    assert f'<script async src="{routes.PLOTLY_JS}"></script>' in head, "plotly.js must start with the page, not after the layout callbacks"
    r = server.get(routes.PLOTLY_JS)
    assert r.status_code == 200 and "immutable" in r.headers["Cache-Control"]
    assert r.get_data() == (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    assert plotly.__version__ in routes.PLOTLY_JS, "the URL must change with the file"
