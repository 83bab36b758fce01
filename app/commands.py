"""The service's subcommands of `lmc`: `up` (the whole system on one machine, see app/up.py) and `token`
(create, list and revoke API tokens in the service's database, with the same LMC_* settings as the API)."""

from __future__ import annotations

import argparse
import os
import sys

from sqlalchemy import select

from app.up import cmd_up


def register(sub: argparse._SubParsersAction) -> None:
    """Add the service's subcommands, `up` and `token`, to `sub`."""
    register_up(sub)
    register_token(sub)


def register_up(sub: argparse._SubParsersAction) -> None:
    """Add the `up` subcommand to `sub`."""
    p = sub.add_parser(
        "up",
        help="run the whole system locally: Redis, API, dashboard, workers (Ctrl-C stops everything)",
        description="Start LMC Lab on this machine with embedded defaults (SQLite and a private Redis in the data "
        "directory). LMC_DATABASE_URL / LMC_REDIS_URL point it at existing servers instead.",
    )
    p.add_argument(
        "--data-dir", default=os.environ.get("LMC_DATA_DIR", "lmc-data"), help="database, artifacts and logs (default: ./lmc-data)"
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to serve on (default 127.0.0.1; 0.0.0.0 to share on a network)")
    p.add_argument("--port", type=int, default=8000, help="API port (default 8000; 0 picks a free one)")
    p.add_argument("--dashboard-port", type=int, default=8050, help="dashboard port (default 8050; 0 picks a free one)")
    p.add_argument("--workers", type=int, default=1, help="local workers (default 1)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per worker (default: torch's choice; 1 when several share a CPU)")
    p.add_argument("--redis-url", default=os.environ.get("LMC_REDIS_URL"), help="use this Redis instead of starting one")
    p.set_defaults(func=cmd_up)


def register_token(sub: argparse._SubParsersAction) -> None:
    """Add the `token` subcommand (create, list, revoke) to `sub`."""
    p = sub.add_parser("token", help="API tokens of the web service: create (shown once), list, revoke")
    p.add_argument(
        "--database-url", help="SQLAlchemy URL of the service's database (default: LMC_DATABASE_URL, else sqlite in LMC_DATA_DIR)"
    )
    actions = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    c = actions.add_parser("create", help="create a token for a user (the user is created when missing); prints it once")
    c.add_argument("--user", required=True, help="user name")
    c.add_argument(
        "--role", required=True, choices=["viewer", "editor", "admin"], help="viewer reads, editor also writes, admin also manages tokens"
    )
    c.set_defaults(func=cmd_create)
    ls = actions.add_parser("list", help="list tokens (id, user, role, first characters; never the token)")
    ls.set_defaults(func=cmd_list)
    r = actions.add_parser("revoke", help="revoke a token by id (see `lmc token list`)")
    r.add_argument("id", type=int)
    r.set_defaults(func=cmd_revoke)


def _sessions(args: argparse.Namespace):
    from .api.db import make_engine, make_sessions, migrate
    from .api.settings import Settings

    settings = Settings(database_url=args.database_url) if args.database_url else Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    migrate(engine)  # a token can be made before the service has ever started
    return make_sessions(engine)


def cmd_create(args: argparse.Namespace) -> int:
    """Create a token and print it (the only time it is shown); return the exit status."""
    from .api.auth import create_token

    with _sessions(args)() as session:
        try:
            token, row = create_token(session, args.user, args.role)
        except ValueError as err:
            print(f"lmc token create: {err}", file=sys.stderr)
            return 2
        print(token)
        print(
            f"token {row.id} for {args.user} ({args.role}); it is shown only now: store it, send it as 'Authorization: Bearer <token>'",
            file=sys.stderr,
        )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Print one line per token: id, user, role, prefix, created, revoked; return the exit status."""
    from .api.models import ApiToken

    with _sessions(args)() as session:
        for t in session.scalars(select(ApiToken).order_by(ApiToken.id)):
            revoked = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "active"
            print(f"{t.id}\t{t.user.name}\t{t.role}\t{t.prefix}...\t{t.created_at:%Y-%m-%d %H:%M}\t{revoked}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    """Revoke the token with the given id; return the exit status (1 when there is none)."""
    from .api.auth import revoke_token

    with _sessions(args)() as session:
        if revoke_token(session, args.id) is None:
            print(f"lmc token revoke: no token with id {args.id} (see `lmc token list`)", file=sys.stderr)
            return 1
    print(f"token {args.id} revoked")
    return 0
