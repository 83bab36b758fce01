"""`lmc token`: create, list and revoke API tokens in the service's database (the same LMC_* settings as the API)."""

from __future__ import annotations

import argparse
import sys

from sqlalchemy import select


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `token` subcommand (create, list, revoke) to `sub`."""
    p = sub.add_parser("token", help="API tokens of the web service: create (shown once), list, revoke")
    p.add_argument("--database-url", help="SQLAlchemy URL of the service's database (default: LMC_DATABASE_URL, else sqlite in LMC_DATA_DIR)")
    actions = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    c = actions.add_parser("create", help="create a token for a user (the user is created when missing); prints it once")
    c.add_argument("--user", required=True, help="user name")
    c.add_argument("--role", required=True, choices=["viewer", "editor", "admin"], help="viewer reads, editor also writes, admin also manages tokens")
    c.set_defaults(func=cmd_create)
    ls = actions.add_parser("list", help="list tokens (id, user, role, first characters; never the token)")
    ls.set_defaults(func=cmd_list)
    r = actions.add_parser("revoke", help="revoke a token by id (see `lmc token list`)")
    r.add_argument("id", type=int)
    r.set_defaults(func=cmd_revoke)


def _sessions(args: argparse.Namespace):  # type: ignore[no-untyped-def]
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
        print(f"token {row.id} for {args.user} ({args.role}); it is shown only now: store it, send it as 'Authorization: Bearer <token>'",
              file=sys.stderr)
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
