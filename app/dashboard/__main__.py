"""`python -m app.dashboard --host H --port P [--api-url URL]`: serve the dashboard (what `lmc up` runs)."""

from __future__ import annotations

import argparse
import os

from . import create_dash

DEFAULT_API_URL = "http://127.0.0.1:8000"


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve the dashboard until interrupted."""
    p = argparse.ArgumentParser(prog="python -m app.dashboard", description="Serve the LMC Lab dashboard.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8050)
    p.add_argument(
        "--api-url",
        default=os.environ.get("LMC_API_URL", DEFAULT_API_URL),
        help=f"the LMC Lab API (default: $LMC_API_URL or {DEFAULT_API_URL})",
    )
    p.add_argument("--debug", action="store_true", help="Dash dev tools and reloading (never on a shared host)")
    p.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("LMC_DASHBOARD_THREADS", "16")),
        help="request threads (default 16: a study page sends about ten callbacks at once)",
    )
    args = p.parse_args(argv)
    app = create_dash(args.api_url)
    if args.debug:
        app.run(host=args.host, port=args.port, debug=True)
        return
    from waitress import serve

    print(f"LMC Lab dashboard on http://{args.host}:{args.port} (API {args.api_url})", flush=True)
    serve(app.server, host=args.host, port=args.port, threads=args.threads, ident="lmc-dashboard")


if __name__ == "__main__":
    main()
