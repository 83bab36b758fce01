"""Plain HTTP routes on the dashboard's server: gallery card previews (SVG), cached by entry and last update."""

from __future__ import annotations

from collections import OrderedDict

from flask import Response

from . import preview, published
from .client import ApiError

CACHE_SIZE = 256


def install(server, api) -> None:
    """Add /preview/<entry id>.svg to the Flask server."""
    cache: OrderedDict[tuple[str, str], str] = OrderedDict()

    @server.route("/preview/<entry_id>.svg")
    def entry_preview(entry_id: str) -> Response:
        # Anonymous read: a preview shows what the permalink shows to anyone (when the API allows anonymous reads).
        client = api()
        try:
            entry = client.entry(entry_id)
        except ApiError as err:
            return Response(preview.placeholder("not found" if err.status == 404 else "API unavailable"), mimetype="image/svg+xml",
                            status=404 if err.status == 404 else 200)
        key = (entry_id, str(entry.get("updated_at")))
        if key not in cache:
            try:
                cache[key] = preview.svg(entry, published.figure_data(client, entry))
            except (ApiError, KeyError, ValueError):
                return Response(preview.placeholder("no preview"), mimetype="image/svg+xml")
            while len(cache) > CACHE_SIZE:
                cache.popitem(last=False)
        return Response(cache[key], mimetype="image/svg+xml", headers={"Cache-Control": "public, max-age=60"})
