"""SMTP submissions accepted per second: ``posthorn smtp`` against Postfix's smtpd.

The load generator is Postfix's ``smtp-source`` (Debian package postfix): N parallel sessions
(default 20) each send 5 KB messages, one per connection unless ``--reuse``. Every ``250``
after the final dot is a durable commit on both sides: Posthorn answers after its group commit,
Postfix after its queue file is written and fsync'd.

1. ``python -m posthorn smtp`` on SQLite (and on PostgreSQL when
   ``POSTHORN_TEST_POSTGRES_URL`` is set, as ``make bench`` does). smtp-source cannot do
   STARTTLS or AUTH, so this run trusts loopback (``SMTP_TRUSTED_NETWORKS``) for one account
   with the verified domain acme.test; everything else (MAIL FROM and From checks, quotas,
   Received, the intake transaction) is the normal path. The emails in the database are
   counted afterwards and must match the acceptances.
2. Postfix 3.x from Debian, run from a temporary configuration directory (``postfix -c``) as a
   relay on a loopback port: ``mynetworks`` = loopback, ``relayhost`` = an SMTP sink on
   loopback, defaults otherwise (so Postfix also relays while it accepts, as it would in use).
   With ``--postfix-defer`` it only queues what it accepts (``defer_transports``), as
   ``posthorn smtp`` does: then none of its CPU goes to delivering during the runs.

Posthorn runs ``--smtp-workers`` session processes (``POSTHORN_SMTP_WORKERS``), by default one
per core (at most 4), as one would configure it on this machine; ``--smtp-workers 1`` measures
a single process.

    scripts/system-deps.sh bench && .venv/bin/python bench/bench_smtp.py
    .venv/bin/python bench/bench_smtp.py --sessions 20 --seconds 10 --rounds 3 \
        [--reuse] [--smtp-workers 2] [--postfix-defer]

Each server gets a calibration run of 1,000 messages; then the servers take turns, ``--rounds``
times (default 3), each run sized to last about ``--seconds``. Taking turns spreads a slow
minute of a shared machine over both sides; before each run Postfix's relay backlog from the
previous one is left to drain (at most 60 s), so its delivery work does not fall into
Posthorn's run. The table shows every run, each server's overall rate (all its accepted
messages over all its seconds), and the ratio of those rates with the lowest and highest
ratio of a single round. Every smtp-source is killed if it outlives its bound (15 s, and
3 × ``--seconds`` + 15 s). Processes started here are stopped by PID (Postfix by
``postfix -c DIR stop``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.dns import DnsServer  # noqa: E402
from tests.support.domains import verified_domain  # noqa: E402
from tests.support.sink import SmtpSink  # noqa: E402

from posthorn.services.container import build_services  # noqa: E402
from posthorn.settings import Settings  # noqa: E402
from posthorn.store.database import Database  # noqa: E402

SMTP_SOURCE = "/usr/sbin/smtp-source"
POSTFIX = "/usr/sbin/postfix"
POSTHORN = [sys.executable, "-m", "posthorn"]
FROM, TO = "bench@acme.test", "user@example.test"
CALIBRATION_MESSAGES = 1000
START_TIMEOUT = 30.0
GRACE = 15.0  # a run is killed this long after its planned duration
DRAIN_TIMEOUT = 60.0  # for Postfix's relay backlog before the next run


@dataclass
class Run:
    sent: int  # messages smtp-source was asked for
    accepted: int  # DATA commands completed with 250
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0


@dataclass
class Server:
    """One server under test, listening on ``port`` while the runs take turns."""

    name: str
    port: int
    drain: Callable[[], str] = lambda: ""  # waits out background work; says what it did
    calibration: int = 0  # messages accepted by the calibration run
    messages: int = 0  # the size of each measured run
    runs: list[Run] = field(default_factory=list)
    stored: Callable[[], int] | None = None  # emails in the database (Posthorn)

    @property
    def rate(self) -> float:
        seconds = sum(r.seconds for r in self.runs)
        return sum(r.accepted for r in self.runs) / seconds if seconds else 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, deadline: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.recv(512)  # the greeting
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port}")


def smtp_source(
    port: int, *, messages: int, sessions: int, size: int, reuse: bool, limit: float
) -> tuple[int, float, str]:
    """Run smtp-source; the number of completed DATA commands, the seconds, and stderr."""
    argv = [SMTP_SOURCE, "-c", "-s", str(sessions), "-m", str(messages), "-l", str(size)]
    if reuse:
        argv.append("-d")
    argv += ["-f", FROM, "-t", TO, "-M", "smtp-source.test", f"127.0.0.1:{port}"]
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    elapsed = time.monotonic() - started
    # -c prints a running count of completed DATA commands, overwritten with \r.
    counts = re.findall(rb"(\d+)", out)
    done = int(counts[-1]) if counts else 0
    return done, elapsed, err.decode("utf-8", "replace").strip()


def calibrate(server: Server, args: argparse.Namespace) -> None:
    """1,000 messages, which also size the measured runs to about ``args.seconds``."""
    done, elapsed, err = smtp_source(
        server.port, messages=CALIBRATION_MESSAGES, limit=GRACE, **_load(args)
    )
    if done < CALIBRATION_MESSAGES:
        raise RuntimeError(f"{server.name}: calibration stopped at {done} messages: {err[-300:]}")
    server.calibration = done
    server.messages = max(1000, int(done / elapsed * args.seconds))


def measure(server: Server, others: list[Server], args: argparse.Namespace) -> Run:
    """One run; first the background work of every server is let finish (Postfix relaying
    what it accepted), so that none of it falls into this run."""
    note = " ".join(n for n in (other.drain() for other in others) if n)
    done, elapsed, err = smtp_source(
        server.port, messages=server.messages, limit=args.seconds * 3 + GRACE, **_load(args)
    )
    if done < server.messages:
        note = f"{note} {err[-200:]}".strip()
    return Run(server.messages, done, elapsed, note)


def _load(args: argparse.Namespace) -> dict[str, Any]:
    return {"sessions": args.sessions, "size": args.size, "reuse": args.reuse}


# ── Posthorn ───────────────────────────────────────────────────────────────────────────────


async def prepare_posthorn(settings: Settings) -> str:
    """A migrated database with an account whose domain acme.test is verified."""
    from posthorn.store.migrate import migrate

    # Verification looks the domain's records up through the settings' resolver: a DNS server
    # of our own, on which the records are published for the length of the set-up.
    with DnsServer() as dns:
        local = settings.model_copy(update={"dns_nameservers": [dns.nameserver]})
        db = Database(local.effective_database_url)
        services = build_services(local, db)
        try:
            await migrate(db)
            account = await services.accounts.create_account("bench")
            await verified_domain(services, dns, account.id, "acme.test")
            return account.id
        finally:
            await services.close()
            await db.dispose()


async def count_emails(url: str) -> int:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        value = (await conn.execute(text("SELECT count(*) FROM emails"))).scalar_one()
    await engine.dispose()
    return int(value)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def posthorn_server(
    name: str, url: str, args: argparse.Namespace, workdir: Path
) -> Iterator[Server]:
    data_dir = workdir / name
    data_dir.mkdir()
    port = free_port()
    settings = Settings(
        data_dir=data_dir,
        database_url=url,
        hostname="bench.posthorn.test",
        secret_key="bench-" + uuid.uuid4().hex,
    )
    account_id = asyncio.run(prepare_posthorn(settings))
    env = {
        **os.environ,
        "POSTHORN_DATA_DIR": str(data_dir),
        "POSTHORN_DATABASE_URL": url,
        "POSTHORN_SECRET_KEY": settings.secret_key,
        "POSTHORN_HOSTNAME": settings.hostname,
        "POSTHORN_SMTP_HOST": "127.0.0.1",
        "POSTHORN_SMTP_PORT": str(port),
        "POSTHORN_SMTP_TRUSTED_NETWORKS": "127.0.0.1/32",
        "POSTHORN_SMTP_TRUSTED_ACCOUNT": account_id,
        # smtp-source sends all its mail from one sender: lift the domain's quotas.
        "POSTHORN_PLANS": '{"BENCH": {"name": "bench", "daily_limit": 100000000, '
        '"hourly_limit": 100000000, "monthly_limit": 100000000}}',
        "POSTHORN_DEFAULT_PLAN": "BENCH",
        "POSTHORN_SMTP_WORKERS": str(args.smtp_workers),
    }
    proc = subprocess.Popen([*POSTHORN, "--log-level", "WARNING", "smtp"], env=env)
    try:
        wait_port(port, time.monotonic() + START_TIMEOUT, proc)
        yield Server(
            f"posthorn ({name})",
            port,
            stored=lambda: asyncio.run(count_emails(settings.effective_database_url)),
        )
    finally:
        stop(proc)


async def fresh_pg(base: str) -> str:
    name = "bench_smtp_" + uuid.uuid4().hex[:10]
    engine = create_async_engine(
        base.replace("postgresql://", "postgresql+asyncpg://", 1), isolation_level="AUTOCOMMIT"
    )
    async with engine.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()
    return base.rsplit("/", 1)[0] + "/" + name


# ── Postfix ────────────────────────────────────────────────────────────────────────────────

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def postfix_config(directory: Path, port: int, relay_port: int, *, defer: bool) -> Path:
    """A Postfix instance of its own: configuration, queue and log under ``directory``.
    With ``defer``, it queues what it accepts without delivering it (``defer_transports``),
    as ``posthorn smtp`` does; otherwise it relays to the sink while it accepts."""
    directory.mkdir()
    for path in (directory.parent, directory):
        path.chmod(0o755)  # the postfix user must reach its queue
    conf, queue, data = directory / "conf", directory / "queue", directory / "data"
    for path in (conf, queue, data):
        path.mkdir()
    shutil.chown(data, "postfix")
    (conf / "main.cf").write_text(
        f"""\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.postfix.test
mydestination =
relay_domains =
mynetworks = 127.0.0.0/8
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
relayhost = [127.0.0.1]:{relay_port}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtp_tls_security_level = none
alias_maps =
alias_database =
maillog_file_prefixes = {directory}
maillog_file = {directory}/maillog
{"defer_transports = relay smtp" if defer else ""}
"""
    )
    (conf / "master.cf").write_text(MASTER_CF.format(port=port))
    return conf


def postfix_ctl(conf: Path, command: str) -> None:
    subprocess.run([POSTFIX, "-c", str(conf), command], check=True, timeout=60)


@contextlib.contextmanager
def postfix_server(workdir: Path, *, defer: bool) -> Iterator[Server]:
    if os.geteuid() != 0:
        raise RuntimeError("Postfix's master must start as root (it drops to the postfix user)")
    port = free_port()
    with SmtpSink(starttls=False, keep_messages=0) as sink:
        conf = postfix_config(workdir / "postfix", port, sink.port, defer=defer)
        postfix_ctl(conf, "start")
        server = Server("postfix", port)

        def drain() -> str:
            """Wait until everything Postfix accepted so far has reached the sink."""
            if defer:
                return ""
            accepted = server.calibration + sum(r.accepted for r in server.runs)
            waiting = accepted - sink.received
            if waiting <= 0:
                return ""
            started = time.monotonic()
            try:
                sink.wait_for(accepted, timeout=DRAIN_TIMEOUT)
            except TimeoutError:
                left = accepted - sink.received
                return f"(Postfix: {left} still queued after {DRAIN_TIMEOUT:.0f} s)"
            return f"(waited {time.monotonic() - started:.1f} s for Postfix to relay {waiting})"

        server.drain = drain
        try:
            wait_port(port, time.monotonic() + START_TIMEOUT)
            yield server
        finally:
            postfix_ctl(conf, "stop")


# ── main ───────────────────────────────────────────────────────────────────────────────────


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--sessions", type=int, default=20, help="parallel SMTP sessions")
    parser.add_argument("--size", type=int, default=5 * 1024, help="message size in bytes")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per server, taking turns")
    parser.add_argument(
        "--reuse", action="store_true", help="several messages per connection (smtp-source -d)"
    )
    parser.add_argument(
        "--smtp-workers",
        type=int,
        default=min(os.cpu_count() or 1, 4),
        help="Posthorn's SMTP session processes (POSTHORN_SMTP_WORKERS); "
        "default: one per core, at most 4",
    )
    parser.add_argument("--no-postfix", action="store_true", help="measure Posthorn only")
    parser.add_argument(
        "--postfix-defer",
        action="store_true",
        help="Postfix only queues what it accepts (defer_transports), as posthorn smtp does",
    )
    args = parser.parse_args()
    for tool, package in ((SMTP_SOURCE, "postfix"), (POSTFIX, "postfix")):
        if not Path(tool).exists():
            sys.exit(f"{tool} is missing: run `scripts/system-deps.sh bench` (package {package})")

    workdir = Path(tempfile.mkdtemp(prefix="posthorn-bench-smtp-"))
    backends = [("sqlite", f"sqlite:///{workdir / 'sqlite.db'}")]
    pg = os.environ.get("POSTHORN_TEST_POSTGRES_URL")
    if pg:
        backends.append(("postgresql", asyncio.run(fresh_pg(pg))))
    mode = "several per connection" if args.reuse else "one per connection"
    print(
        f"{args.sessions} sessions, {args.size} B messages, {mode}, {args.rounds} rounds of "
        f"~{args.seconds:.0f} s per server, {args.smtp_workers} Posthorn SMTP session "
        f"process(es), Postfix {'queueing only' if args.postfix_defer else 'relaying'}",
        flush=True,
    )
    servers: list[Server] = []
    stored: dict[str, int] = {}
    try:
        with contextlib.ExitStack() as stack:
            for name, url in backends:
                servers.append(stack.enter_context(posthorn_server(name, url, args, workdir)))
            if not args.no_postfix:
                try:
                    servers.append(
                        stack.enter_context(postfix_server(workdir, defer=args.postfix_defer))
                    )
                except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                    print(f"Postfix could not be measured: {exc}", flush=True)
            for server in servers:
                calibrate(server, args)
            for round_ in range(1, args.rounds + 1):
                for server in servers:
                    run = measure(server, servers, args)
                    server.runs.append(run)
                    print(
                        f"[round {round_}] {server.name:<20} {run.rate:>6.0f}/s  {run.note}",
                        flush=True,
                    )
        for server in servers:  # stopped, so every answered message is in
            if server.stored is not None:
                stored[server.name] = server.stored()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(servers, stored)


def report(servers: list[Server], stored: dict[str, int]) -> None:
    print()
    print(
        f"{'server':<22} {'accepted/s':>10} {'accepted':>9} {'seconds':>8} "
        f"{'stored/sent':>12}  runs (accepted/s)"
    )
    for server in servers:
        accepted = sum(r.accepted for r in server.runs)
        seconds = sum(r.seconds for r in server.runs)
        total = server.calibration + accepted
        count = f"{stored[server.name]}/{total}" if server.name in stored else ""
        runs = ", ".join(f"{r.rate:.0f}" for r in server.runs)
        print(
            f"{server.name:<22} {server.rate:>10.0f} {accepted:>9} {seconds:>8.1f} "
            f"{count:>12}  {runs}"
        )
    postfix = next((s for s in servers if s.name == "postfix"), None)
    if postfix is None or not postfix.rate:
        return
    for server in servers:
        if server is postfix:
            continue
        per_round = [
            ours.rate / theirs.rate
            for ours, theirs in zip(server.runs, postfix.runs, strict=True)
            if theirs.rate
        ]
        print(
            f"{server.name} / postfix = {server.rate / postfix.rate:.2f}x "
            f"(rounds: median {statistics.median(per_round):.2f}x, "
            f"{min(per_round):.2f}x to {max(per_round):.2f}x)"
        )


if __name__ == "__main__":
    main()
