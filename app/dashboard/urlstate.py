"""URL state: pages mirror their controls into the query string, so any view can be linked.

history.replaceState changes the address without the page container noticing (dcc.Location only listens to
its own events and popstate), so the page is not re-rendered on every control change.
"""

from __future__ import annotations

import json
from typing import Any, Protocol
from urllib.parse import parse_qs

from dash import Input, Output


class ClientsideTarget(Protocol):
    """Where a clientside callback is registered: a Dash app or a page's Callbacks."""

    def clientside_callback(self, function: str, *dependencies: Any, **kwargs: Any) -> Any: ...


def params(search: str | None) -> dict[str, list[str]]:
    """Return a query string's parameters (values always lists)."""
    return parse_qs((search or "").lstrip("?"), keep_blank_values=False)


def first(kw: dict, name: str, default: str | None = None) -> str | None:
    """Return one query parameter from a page layout's keyword arguments (Dash passes them as strings)."""
    v = kw.get(name)
    if isinstance(v, list):
        v = v[0] if v else None
    return v if v not in (None, "") else default


def many(kw: dict, name: str) -> list[str] | None:
    """Return a comma-separated query parameter as a list, or None when absent."""
    v = first(kw, name)
    return None if v is None else [x for x in v.split(",") if x]


def sync(target: ClientsideTarget, sink_id: str, fields: dict[str, tuple[str, str]]) -> None:
    """Register on `target` a clientside callback that writes `fields` ({param: (component id, prop)}) into the address bar."""
    names = list(fields)
    target.clientside_callback(
        f"""function() {{
            const names = {json.dumps(names)};
            const q = new URLSearchParams();
            for (let i = 0; i < names.length; i++) {{
                let v = arguments[i];
                if (v === null || v === undefined || v === '' || (Array.isArray(v) && v.length === 0)) continue;
                if (Array.isArray(v)) v = v.join(',');
                if (v === true) v = '1';
                if (v === false) v = '0';
                q.set(names[i], String(v));
            }}
            const s = q.toString();
            const url = window.location.pathname + (s ? '?' + s : '');
            if (url !== window.location.pathname + window.location.search) window.history.replaceState(window.history.state, '', url);
            return s;
        }}""",
        Output(sink_id, "data"),
        [Input(cid, prop) for cid, prop in fields.values()],
    )
