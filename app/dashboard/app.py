"""Assemble the Dash app: shell (navigation, token), pages, their callbacks, and the server-side preview/export routes."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, dcc, html, no_update

from . import STATIC
from .callbacks import Callbacks
from .client import ApiError, api, bind
from .ids import Shell
from .pages import compare, entry, gallery, launch, studies, study

PAGES = (studies, launch, study, compare, gallery, entry)
NAV = (("Studies", "/"), ("Launch", "/launch"), ("Compare", "/compare"), ("Gallery", "/gallery"))
EDIT_ROLES = ("editor", "admin")
callbacks = Callbacks()


def shell() -> html.Div:
    """Return the frame around every page: navigation, the token field, the shared stores."""
    return html.Div(
        id=Shell.ROOT,
        className="read-only",
        children=[
            dcc.Store(id=Shell.TOKEN, storage_type="local"),
            dcc.Location(id=Shell.NAV, refresh="callback-nav"),
            html.Header(
                className="topbar",
                children=[
                    html.A("LMC Lab", href="/", className="brand"),
                    html.Nav([dcc.Link(name, href=href, className="navlink") for name, href in NAV]),
                    html.Div(
                        className="auth",
                        children=[
                            html.Span(id=Shell.WHOAMI, className="whoami"),
                            dcc.Input(
                                id=Shell.TOKEN_INPUT,
                                type="password",
                                placeholder="API token (for editing)",
                                debounce=True,
                                className="token-input",
                            ),
                            html.Button("Use token", id=Shell.TOKEN_SAVE, className="btn btn-small"),
                            html.Button("Sign out", id=Shell.TOKEN_CLEAR, className="btn btn-small btn-ghost"),
                        ],
                    ),
                ],
            ),
            html.Main(dash.page_container, className="page"),
            html.Footer(id=Shell.FOOTER, className="footer"),
        ],
    )


@callbacks.callback(
    Output(Shell.TOKEN, "data"),
    Output(Shell.TOKEN_INPUT, "value"),
    Input(Shell.TOKEN_SAVE, "n_clicks"),
    Input(Shell.TOKEN_INPUT, "n_submit"),
    Input(Shell.TOKEN_CLEAR, "n_clicks"),
    State(Shell.TOKEN_INPUT, "value"),
    prevent_initial_call=True,
)
def set_token(_save: int | None, _submit: int | None, _clear: int | None, value: str | None) -> tuple[str | None, str]:
    """Keep the typed token in the browser's local storage (Sign out forgets it) and empty the field."""
    if dash.ctx.triggered_id == Shell.TOKEN_CLEAR:
        return None, ""
    return (value or "").strip() or None, ""


@callbacks.callback(
    Output(Shell.WHOAMI, "children"), Output(Shell.ROOT, "className"), Output(Shell.FOOTER, "children"), Input(Shell.TOKEN, "data")
)
def whoami(token: str | None) -> tuple[Any, str, Any]:
    """Return who the token belongs to, the root's class (can-edit reveals the editing controls) and the footer's health line."""
    try:
        me = api(token).me()
    except ApiError as err:
        return html.Span(err.message, className="whoami-error"), "read-only", no_update
    client = api()
    try:
        h = client.health()
        foot = f"LMC Lab {h.get('version')} · API {client.base_url} · {h.get('status')} · workers: {h.get('workers')}"
    except ApiError as err:
        foot = f"API {client.base_url}: {err.message}"
    if me.get("anonymous"):
        return "anonymous visitor (read-only)", "read-only", foot
    role = me.get("role")
    return f"{me.get('user')} ({role})", "can-edit" if role in EDIT_ROLES else "read-only", foot


# plotly.js (4.8 MB) takes longer to evaluate than anything else on a page load. dcc.Graph uses window.Plotly when it
# exists and only otherwise injects the script once its own chunk has loaded, after the page's layout callbacks; an
# async tag in the head starts it with the first request, so its evaluation overlaps the server round trips. The URL
# carries plotly's version and is cached as immutable (routes.py), so a returning visitor does not even revalidate it.
INDEX = """<!DOCTYPE html>
<html>
    <head>
        {%metas%}
        <title>{%title%}</title>
        {%favicon%}
        <script async src="PLOTLY_SRC"></script>
        {%css%}
    </head>
    <body>
        {%app_entry%}
        <footer>
            {%config%}
            {%scripts%}
            {%renderer%}
        </footer>
    </body>
</html>"""


def build(api_url: str) -> dash.Dash:
    """Return the configured Dash app, bound to the API at `api_url`."""
    app = dash.Dash(
        __name__,
        use_pages=True,
        pages_folder="",
        assets_folder=str(STATIC),
        serve_locally=True,
        suppress_callback_exceptions=True,
        title="LMC Lab",
        update_title=None,  # type: ignore[arg-type]  # Dash documents None (keep the tab's title while callbacks run); its stub says str
        compress=False,
    )
    from . import routes  # Flask routes need the app's server

    app.index_string = INDEX.replace("PLOTLY_SRC", app.config.requests_pathname_prefix + routes.PLOTLY_JS.lstrip("/"))
    bound = bind(app.server, api_url)
    app.server.config["LMC_API_URL"] = api_url
    for page in PAGES:
        page.register(app)
    app.layout = shell()
    callbacks.install(app)
    routes.install(app.server, bound)
    return app
