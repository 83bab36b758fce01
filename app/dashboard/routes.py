"""Plain HTTP routes on the dashboard's server: gallery card pictures, the PNG thumbnail when an entry has one (passed through
from the API, which the browser may not reach) else an SVG preview drawn from the figure's data, cached by entry and last update."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import plotly
from flask import Response, redirect, request, send_file
from werkzeug.wrappers import Response as BaseResponse

from . import preview, published
from .client import ApiError

CACHE_SIZE = 256
PLOTLY_JS = f"/lmc-static/plotly-{plotly.__version__}.min.js"
YEAR_S = 365 * 24 * 3600


def install(server, api) -> None:
    """Add the versioned plotly.js, /preview/<entry id>.svg and /thumbnail/<entry id>.png to the Flask server."""
    cache: OrderedDict[tuple[str, str], str] = OrderedDict()
    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"

    @server.route(PLOTLY_JS)
    def plotly_bundle() -> Response:
        # A new plotly release gets a new URL, so the file under this one never changes.
        r = send_file(plotly_js, mimetype="text/javascript", max_age=YEAR_S)
        r.headers["Cache-Control"] = f"public, max-age={YEAR_S}, immutable"
        return r

    @server.route("/preview/<entry_id>.svg")
    def entry_preview(entry_id: str) -> Response:
        # Anonymous read: a preview shows what the permalink shows to anyone (when the API allows anonymous reads).
        client = api()
        try:
            entry = client.entry(entry_id)
        except ApiError as err:
            return Response(
                preview.placeholder("not found" if err.status == 404 else "API unavailable"),
                mimetype="image/svg+xml",
                status=404 if err.status == 404 else 200,
            )
        key = (entry_id, str(entry.get("updated_at")))
        if key not in cache:
            try:
                cache[key] = preview.svg(entry, published.figure_data(client, entry))
            except (ApiError, KeyError, ValueError):
                return Response(preview.placeholder("no preview"), mimetype="image/svg+xml")
            while len(cache) > CACHE_SIZE:
                cache.popitem(last=False)
        return Response(cache[key], mimetype="image/svg+xml", headers={"Cache-Control": "public, max-age=60"})

    @server.route("/thumbnail/<entry_id>.png")
    def entry_thumbnail(entry_id: str) -> BaseResponse:  # redirect() answers with werkzeug's Response, Flask's base class
        # Anonymous read, as the preview. The browser's ETag goes to the API, so an unchanged picture costs a 304 both ways.
        try:
            png, tag = api().thumbnail(entry_id, request.headers.get("If-None-Match"))
        except ApiError:
            return redirect(f"/preview/{entry_id}.svg")  # no thumbnail (any more), or the API is away: the drawn preview says which
        # Cards ask with ?v=<etag>: such a URL names one picture for good; without it, revalidate every time.
        policy = "public, max-age=86400, immutable" if request.args.get("v") else "no-cache"
        headers = {"Cache-Control": policy, "X-Content-Type-Options": "nosniff", **({"ETag": tag} if tag else {})}
        if png is None:
            return Response(status=304, headers=headers)
        return Response(png, mimetype="image/png", headers=headers)
