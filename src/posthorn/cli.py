"""``posthorn``: the composition root of every process role.

    posthorn serve            web + worker + SMTP + inbound, each in its own process
    posthorn web | worker | smtp | inbound   one role, for scale-out on PostgreSQL
    posthorn migrate          upgrade the schema
    posthorn send …           queue one email (smoke test)
    posthorn admin …          accounts, their settings, API keys and users

Settings come from the environment (``POSTHORN_*``) and ``posthorn.toml``; they are built
here once and passed down.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from posthorn import __version__
from posthorn.domain.permissions import Permission
from posthorn.errors import PosthornError
from posthorn.settings import Settings, load_settings
from posthorn.store.database import Database
from posthorn.store.migrate import is_current, migrate

T = TypeVar("T")
PR_SET_PDEATHSIG = 1  # prctl(2)
log = logging.getLogger("posthorn")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop, the faster event loop, when it is available."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; this is a fallback
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s",
        stream=sys.stderr,
    )


# ── roles ──────────────────────────────────────────────────────────────────────────────────


async def _migrate(settings: Settings) -> None:
    db = Database(settings.effective_database_url, pool_size=1)
    try:
        await migrate(db)
    finally:
        await db.dispose()


async def _require_schema(db: Database) -> None:
    if not await is_current(db):
        raise SystemExit("posthorn: the database schema is not current; run `posthorn migrate`")


async def _check_schema(settings: Settings) -> None:
    db = Database(settings.effective_database_url, pool_size=1)
    try:
        await _require_schema(db)
    finally:
        await db.dispose()


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    run_async(_migrate(settings))
    print("schema is up to date", file=sys.stderr)
    return 0


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How every HTTP server of ours runs uvicorn (the tests use the same options)."""
    return {
        "host": settings.http_host,
        "port": settings.http_port,
        "http": "httptools",
        "access_log": False,
        "log_config": None,
        "timeout_graceful_shutdown": 10,
        # The client address is decided by our own rule (settings.trusted_proxies, see
        # domain/network.py); uvicorn would otherwise believe X-Forwarded-For from loopback.
        "proxy_headers": False,
    }


def web_app() -> Any:
    """The app factory uvicorn calls in each HTTP worker process (``web_workers`` > 1)."""
    from posthorn.api.app import create_app

    return create_app(load_settings())


def cmd_web(settings: Settings, _args: argparse.Namespace) -> int:
    import uvicorn

    from posthorn.api.app import create_app

    common = uvicorn_options(settings)
    if settings.web_workers > 1:
        run_async(_check_schema(settings))
        uvicorn.run(
            "posthorn.cli:web_app",
            factory=True,
            workers=settings.web_workers,
            loop="uvloop",
            **common,
        )
        return 0

    async def main() -> None:
        app = create_app(settings)
        await _require_schema(app.state.services.db)
        await uvicorn.Server(uvicorn.Config(app, loop="none", **common)).serve()

    run_async(main())
    return 0


def cmd_worker(settings: Settings, _args: argparse.Namespace) -> int:
    """Deliveries, webhook dispatch and paced bulk jobs: everything that works the queue."""
    from posthorn.bulk_runner import run_bulk
    from posthorn.delivery.transport import SmtpDeliverer
    from posthorn.services.container import build_services
    from posthorn.services.signing import DkimSigner
    from posthorn.webhooks.dispatcher import run_dispatcher
    from posthorn.worker import Worker

    async def main() -> None:
        services = build_services(settings)
        db = services.db
        await _require_schema(db)
        worker = Worker(
            db,
            settings,
            SmtpDeliverer(settings),
            DkimSigner(db, settings),
            relays=services.relays,
            make_deliverer=SmtpDeliverer,
        )
        stop = asyncio.Event()

        def on_signal() -> None:
            stop.set()
            worker.stop()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            await asyncio.gather(
                worker.run(),
                run_dispatcher(settings, db, stop=stop),
                run_bulk(settings, services, stop=stop),
            )
        finally:
            await services.close()
            await db.dispose()

    run_async(main())
    return 0


def cmd_smtp(settings: Settings, args: argparse.Namespace) -> int:
    """The SMTP submission server: in this process, or (``smtp_workers`` > 1) in session
    processes that hand their messages to this one (smtp/workers.py)."""
    from posthorn.services.container import build_services
    from posthorn.smtp.server import run_smtp

    async def main() -> int:
        services = build_services(settings)
        await _require_schema(services.db)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            if args.intake_fd is not None:
                from posthorn.smtp.workers import run_child

                await run_child(settings, services, stop=stop, intake_fd=args.intake_fd)
            elif settings.smtp_workers > 1:
                from posthorn.smtp.workers import run_parent

                return await run_parent(settings, services, stop=stop, log_level=args.log_level)
            else:
                await run_smtp(settings, services, stop=stop)
        finally:
            await services.close()
            await services.db.dispose()
        return 0

    return run_async(main())


def cmd_inbound(settings: Settings, _args: argparse.Namespace) -> int:
    from posthorn.inbound.server import run_inbound

    async def main() -> None:
        db = Database(settings.effective_database_url)
        await _require_schema(db)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await run_inbound(settings, db, stop=stop)
        finally:
            await db.dispose()

    run_async(main())
    return 0


ROLES = ("web", "worker", "smtp", "inbound")


def _stop_with(parent: int) -> Callable[[], None]:
    """For a child of ``serve``: have the kernel send it SIGTERM when ``serve`` dies, even by
    SIGKILL, so no role is left running on its own (Linux ``PR_SET_PDEATHSIG``)."""

    def arrange() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # serve died before the request was made
                os._exit(0)

    return arrange


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Migrate, then run every role as a child process until SIGTERM/SIGINT or one dies."""
    run_async(_migrate(settings))
    children = {
        role: subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "posthorn", "--log-level", args.log_level, role],
            preexec_fn=_stop_with(os.getpid()),  # serve has no threads of its own when it forks
        )
        for role in ROLES
    }
    log.info(
        "posthorn %s serving: API on http://%s:%d, SMTP on %s:%d (pids %s)",
        __version__,
        settings.http_host,
        settings.http_port,
        settings.smtp_host,
        settings.smtp_port,
        ", ".join(f"{role}={p.pid}" for role, p in children.items()),
    )
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    exit_code = 0
    while not stopping:
        dead = [(role, p) for role, p in children.items() if p.poll() is not None]
        if dead:
            role, proc = dead[0]
            log.error("%s exited with %s; stopping", role, proc.returncode)
            exit_code = proc.returncode or 1
            break
        time.sleep(0.2)
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in children.values():
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return exit_code


# ── one-off commands ───────────────────────────────────────────────────────────────────────


def _emit(args: argparse.Namespace, obj: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(obj))
    else:
        print(text)


def _with_db(settings: Settings, work: Callable[[Database], Coroutine[Any, Any, T]]) -> T:
    async def main() -> T:
        db = Database(settings.effective_database_url, pool_size=2)
        try:
            await _require_schema(db)
            return await work(db)
        finally:
            await db.dispose()

    return run_async(main())


def cmd_create_account(settings: Settings, args: argparse.Namespace) -> int:
    from posthorn.services.accounts import Accounts

    row = _with_db(settings, lambda db: Accounts(db).create_account(args.name))
    _emit(args, {"id": row.id, "name": row.name}, f"account {row.id} ({row.name}) created")
    return 0


def cmd_create_key(settings: Settings, args: argparse.Namespace) -> int:
    from posthorn.services.accounts import Accounts

    created = _with_db(
        settings,
        lambda db: Accounts(db).create_key(
            args.account,
            name=args.name,
            permission=Permission(args.permission),
            expires_in_days=args.expires_in_days,
        ),
    )
    row = created.row
    _emit(
        args,
        {
            "id": row.id,
            "key": created.key,
            "name": row.name,
            "permission": row.permission,
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        },
        f"API key {row.id} ({row.permission}) created. It is shown only this once:\n{created.key}",
    )
    return 0


def cmd_create_user(settings: Settings, args: argparse.Namespace) -> int:
    from posthorn.services.users import Users

    row = _with_db(
        settings,
        lambda db: Users(db).create_user(
            args.account, username=args.username, password=args.password
        ),
    )
    _emit(
        args,
        {"id": row.id, "account_id": row.account_id, "username": row.username},
        f"user {row.username} ({row.id}) created in account {row.account_id}",
    )
    return 0


def cmd_update_account(settings: Settings, args: argparse.Namespace) -> int:
    from posthorn.services.accounts import Accounts

    changes: dict[str, Any] = {}
    if args.default_sender is not None:
        changes["default_sender"] = args.default_sender or None  # "" clears it
    if args.timezone is not None:
        changes["timezone"] = args.timezone
    row = _with_db(settings, lambda db: Accounts(db).update_account(args.account_id, changes))
    _emit(
        args,
        {
            "id": row.id,
            "name": row.name,
            "default_sender": row.default_sender,
            "timezone": row.timezone,
            "created_at": row.created_at.isoformat(),
        },
        f"account {row.id} ({row.name}): default sender "
        f"{row.default_sender or '(none)'}, time zone {row.timezone}",
    )
    return 0


def progress_bar(done: int, total: int) -> None:
    """A one-line progress bar on stderr (stdout stays clean for --json)."""
    width = 40
    share = done / total if total else 1.0
    filled = int(width * share)
    end = "\n" if done >= total else ""
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {share:6.1%}", end=end, file=sys.stderr)


def cmd_lists_import(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from posthorn.services.container import build_services
    from posthorn.services.lists import import_csv

    path = Path(args.file)
    if not path.is_file():
        print(f"posthorn: no such file: {path}", file=sys.stderr)
        return 2

    async def work(db: Database) -> dict[str, Any]:
        services = build_services(settings, db)
        try:
            report = await import_csv(
                services,
                account_id=args.account,
                list_id=args.list,
                path=path,
                progress=progress_bar,
            )
        finally:
            await services.close()
        return dict(report.as_json())

    report = _with_db(settings, work)
    _emit(
        args,
        report,
        f"imported {report['imported']}, invalid {report['invalid']}, "
        f"duplicate {report['duplicate']}",
    )
    return 0


def cmd_send(settings: Settings, args: argparse.Namespace) -> int:
    from posthorn.services.container import build_services
    from posthorn.services.intake import SendRequest

    async def work(db: Database) -> str:
        services = build_services(settings, db)
        try:
            accepted = await services.intake.submit(
                SendRequest(
                    account_id=args.account,
                    source="cli",
                    from_=args.from_,
                    to=args.to,
                    cc=args.cc or [],
                    subject=args.subject,
                    text=args.text,
                    html=args.html,
                )
            )
        finally:
            await services.close()
        return accepted.id

    email_id = _with_db(settings, work)
    _emit(args, {"id": email_id, "status": "queued"}, f"queued as {email_id}")
    return 0


# ── argument parsing ───────────────────────────────────────────────────────────────────────


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posthorn", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument("--version", action="version", version=f"posthorn {__version__}")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("serve", help="run every role (web, worker, smtp, inbound)").set_defaults(
        func=cmd_serve
    )
    sub.add_parser("web", help="run the HTTP API").set_defaults(func=cmd_web)
    sub.add_parser("worker", help="run a delivery worker").set_defaults(func=cmd_worker)
    smtp = sub.add_parser("smtp", help="run the SMTP submission server")
    smtp.set_defaults(func=cmd_smtp)
    # Internal: a session process of POSTHORN_SMTP_WORKERS, linked to its parent by this fd.
    smtp.add_argument("--intake-fd", type=int, help=argparse.SUPPRESS)
    sub.add_parser("inbound", help="receive bounces and complaints").set_defaults(func=cmd_inbound)
    sub.add_parser("migrate", help="upgrade the database schema").set_defaults(func=cmd_migrate)

    send = sub.add_parser("send", help="queue one email")
    send.add_argument("--account", required=True)
    send.add_argument("--from", dest="from_", required=True)
    send.add_argument("--to", action="append", required=True)
    send.add_argument("--cc", action="append")
    send.add_argument("--subject", required=True)
    send.add_argument("--text")
    send.add_argument("--html")
    send.add_argument("--json", action="store_true")
    send.set_defaults(func=cmd_send)

    admin = sub.add_parser("admin", help="accounts and API keys").add_subparsers(
        dest="admin_command", required=True
    )
    account = admin.add_parser("create-account", help="create an account (tenant)")
    account.add_argument("name")
    account.add_argument("--json", action="store_true")
    account.set_defaults(func=cmd_create_account)

    key = admin.add_parser("create-key", help="create an API key (shown once)")
    key.add_argument("--account", required=True)
    key.add_argument("--name", required=True)
    key.add_argument(
        "--permission", default=Permission.FULL_ACCESS.value, choices=[p.value for p in Permission]
    )
    key.add_argument("--expires-in-days", type=int)
    key.add_argument("--json", action="store_true")
    key.set_defaults(func=cmd_create_key)

    lists = sub.add_parser("lists", help="mailing lists").add_subparsers(
        dest="lists_command", required=True
    )
    imports = lists.add_parser("import", help="import contacts from a CSV file")
    imports.add_argument("file")
    imports.add_argument("--list", required=True)
    imports.add_argument("--account", required=True)
    imports.add_argument("--json", action="store_true")
    imports.set_defaults(func=cmd_lists_import)

    user = admin.add_parser("create-user", help="create a login (dashboard, BizMail API, SMTP)")
    user.add_argument("--account", required=True)
    user.add_argument("--username", required=True)
    user.add_argument("--password", required=True)
    user.add_argument("--json", action="store_true")
    user.set_defaults(func=cmd_create_user)

    update = admin.add_parser("update-account", help="set an account's default sender or time zone")
    update.add_argument("account_id", metavar="ID")
    update.add_argument(
        "--default-sender",
        metavar="ADDRESS",
        help='"addr" or "Name <addr>" on a domain of the account; "" clears it',
    )
    update.add_argument("--timezone", metavar="ZONE", help="an IANA name, e.g. Asia/Ho_Chi_Minh")
    update.add_argument("--json", action="store_true")
    update.set_defaults(func=cmd_update_account)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level.upper())
    settings = load_settings()
    try:
        code = args.func(settings, args)
    except PosthornError as exc:
        print(f"posthorn: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)
