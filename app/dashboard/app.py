"""Assemble the Dash app: shell (navigation, token), pages, their callbacks, and the server-side preview/export routes."""

from __future__ import annotations

import dash
from dash import Input, Output, State, dcc, html, no_update

from . import STATIC
from .client import ApiError, Client
from .pages import compare, entry, gallery, launch, studies, study

PAGES = (studies, launch, study, compare, gallery, entry)
NAV = (("Studies", "/"), ("Launch", "/launch"), ("Compare", "/compare"), ("Gallery", "/gallery"))
EDIT_ROLES = ("editor", "admin")


class Api:
    """Builds a Client per request with the visitor's token: the token lives in the browser, never on the server."""

    def __init__(self, base_url: str):
        self.base_url = base_url

    def __call__(self, token: str | None = None) -> Client:
        return Client(self.base_url, token or None)


def shell() -> html.Div:
    """Return the frame around every page: navigation, the token field, the shared stores."""
    return html.Div(id="root", className="read-only", children=[
        dcc.Store(id="token", storage_type="local"),
        dcc.Location(id="nav", refresh="callback-nav"),
        html.Header(className="topbar", children=[
            html.A("LMC Lab", href="/", className="brand"),
            html.Nav([dcc.Link(name, href=href, className="navlink") for name, href in NAV]),
            html.Div(className="auth", children=[
                html.Span(id="whoami", className="whoami"),
                dcc.Input(id="token-input", type="password", placeholder="API token (for editing)", debounce=True, className="token-input"),
                html.Button("Use token", id="token-save", className="btn btn-small"),
                html.Button("Sign out", id="token-clear", className="btn btn-small btn-ghost"),
            ]),
        ]),
        html.Main(dash.page_container, className="page"),
        html.Footer(id="footer", className="footer"),
    ])


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
    """Return the configured Dash app."""
    app = dash.Dash(__name__, use_pages=True, pages_folder="", assets_folder=str(STATIC), serve_locally=True,
                    suppress_callback_exceptions=True, title="LMC Lab", update_title=None, compress=False)
    from . import routes  # noqa: PLC0415  (Flask routes need the app's server)

    app.index_string = INDEX.replace("PLOTLY_SRC", app.config.requests_pathname_prefix + routes.PLOTLY_JS.lstrip("/"))
    api = Api(api_url)
    app.server.config["LMC_API_URL"] = api_url
    for page in PAGES:
        page.register(app, api)
    app.layout = shell()

    @app.callback(Output("token", "data"), Output("token-input", "value"),
                  Input("token-save", "n_clicks"), Input("token-input", "n_submit"), Input("token-clear", "n_clicks"),
                  State("token-input", "value"), prevent_initial_call=True)
    def set_token(_save, _submit, _clear, value):
        if dash.ctx.triggered_id == "token-clear":
            return None, ""
        return (value or "").strip() or None, ""

    @app.callback(Output("whoami", "children"), Output("root", "className"), Output("footer", "children"), Input("token", "data"))
    def whoami(token):
        try:
            me = api(token).me()
        except ApiError as err:
            return html.Span(err.message, className="whoami-error"), "read-only", no_update
        try:
            h = api().health()
            foot = f"LMC Lab {h.get('version')} · API {api_url} · {h.get('status')} · workers: {h.get('workers')}"
        except ApiError as err:
            foot = f"API {api_url}: {err.message}"
        if me.get("anonymous"):
            return "anonymous visitor (read-only)", "read-only", foot
        role = me.get("role")
        return f"{me.get('user')} ({role})", "can-edit" if role in EDIT_ROLES else "read-only", foot

    routes.install(app.server, api)
    return app
