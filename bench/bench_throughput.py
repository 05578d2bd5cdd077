"""Throughput of the native send path, on SQLite and (when available) PostgreSQL.

1. *Accepted/s*: ``wrk`` posts emails to ``POST /v1/emails`` from many connections for a fixed
   time against ``posthorn web``; every 200 is a durable commit. Afterwards the emails in the
   database are counted and compared with the 200s wrk saw.
2. *Delivered/s*: a ``posthorn worker`` drains that backlog into an SMTP sink on loopback
   (MX looked up on a local DNS server), timed from start until every delivery is final.

    make bench                              # both backends (PostgreSQL with fsync on)
    .venv/bin/python bench/bench_throughput.py --seconds 10 --connections 64

Every phase is bounded in time; the processes started here are stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.dns import DnsServer  # noqa: E402
from tests.support.domains import publish  # noqa: E402
from tests.support.sink import SmtpSink  # noqa: E402

POSTHORN = [sys.executable, "-m", "posthorn"]
BODY = {
    "from": "Bench <bench@acme.test>",
    "to": ["user@example.test"],
    "subject": "Your receipt",
    "html": "<p>" + "Thank you for your order. " * 40 + "</p>",
    "text": "Thank you for your order. " * 40,
}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    out = subprocess.run([*POSTHORN, *args], env=env, check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout)) if "--json" in args else {}


def wait_http(port: int, deadline: float) -> None:
    import httpx

    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("posthorn web did not come up")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def verify_domain(port: int, key: str, dns: DnsServer) -> None:
    """Register acme.test, publish its records on the local DNS server and verify it."""
    import httpx

    base = f"http://127.0.0.1:{port}"
    headers = {"X-API-KEY": key}
    domain = httpx.post(f"{base}/v1/domains", headers=headers, json={"domain": "acme.test"}).json()
    publish(dns, "acme.test", domain["dns_records"])
    checked = httpx.post(f"{base}/v1/domains/{domain['id']}/verify", headers=headers).json()
    if checked["status"] != "verified":
        raise RuntimeError(f"acme.test did not verify: {checked}")
    # The default plan allows 833 an hour: a benchmark needs a bigger plan.
    limits = {"hourly_limit": 10**9, "daily_limit": 10**9, "monthly_limit": 10**9}
    httpx.patch(f"{base}/v1/domains/{domain['id']}", headers=headers, json=limits)


def run_wrk(port: int, key: str, seconds: int, connections: int, workdir: Path) -> dict[str, float]:
    script = workdir / "post.lua"
    body = json.dumps(BODY).replace("\\", "\\\\").replace("'", "\\'")
    script.write_text(
        f"wrk.method = 'POST'\n"
        f"wrk.headers['Content-Type'] = 'application/json'\n"
        f"wrk.headers['X-API-KEY'] = '{key}'\n"
        f"wrk.body = '{body}'\n"
    )
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/v1/emails",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "requests": requests,
        "errors": int(non2xx.group(1)) if non2xx else 0,
        "rps": rps,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
    }


async def count(url: str, sql: str) -> int:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        value = (await conn.execute(text(sql))).scalar_one()
    await engine.dispose()
    return int(value)


def async_url(url: str) -> str:
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


async def fresh_pg(base: str) -> str:
    name = "bench_" + uuid.uuid4().hex[:10]
    engine = create_async_engine(async_url(base), isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()
    return base.rsplit("/", 1)[0] + "/" + name


def bench_backend(name: str, url: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    data_dir = workdir / name
    data_dir.mkdir()
    port = free_port()
    with SmtpSink(starttls=False) as sink, DnsServer() as dns:
        dns.add("example.test", "MX", "mx.example.test", priority=10)
        dns.add("mx.example.test", "A", "127.0.0.1")
        env = {
            **os.environ,
            "POSTHORN_DATA_DIR": str(data_dir),
            "POSTHORN_DATABASE_URL": url,
            "POSTHORN_HTTP_PORT": str(port),
            "POSTHORN_HOSTNAME": "bench.posthorn.test",
            "POSTHORN_MX_PORT": str(sink.port),
            "POSTHORN_MX_ALLOW_PRIVATE": "true",
            "POSTHORN_DNS_NAMESERVERS": dns.nameserver,
            "POSTHORN_WEB_WORKERS": str(args.web_workers),
        }
        cli(env, "migrate")
        account = cli(env, "admin", "create-account", "bench", "--json")
        key = cli(env, "admin", "create-key", "--account", account["id"], "--name", "b", "--json")

        web = subprocess.Popen([*POSTHORN, "--log-level", "WARNING", "web"], env=env)
        try:
            wait_http(port, time.monotonic() + 30)
            verify_domain(port, key["key"], dns)
            load = run_wrk(port, key["key"], args.seconds, args.connections, workdir)
        finally:
            stop(web)
        stored = asyncio.run(count(async_url(url), "SELECT count(*) FROM emails"))

        worker = subprocess.Popen([*POSTHORN, "--log-level", "WARNING", "worker"], env=env)
        started = time.monotonic()
        deadline = started + args.drain_seconds
        pending = stored
        try:
            while time.monotonic() < deadline:
                pending = asyncio.run(
                    count(
                        async_url(url),
                        "SELECT count(*) FROM deliveries WHERE next_attempt_at IS NOT NULL",
                    )
                )
                if pending == 0:
                    break
                time.sleep(0.5)
        finally:
            elapsed = time.monotonic() - started
            stop(worker)
        received = len(sink.messages)
    return {
        "backend": name,
        "accepted_per_s": load["rps"] * (1 - load["errors"] / max(load["requests"], 1)),
        "requests": load["requests"],
        "non_2xx": load["errors"],
        "p99_ms": load["p99_ms"],
        "stored": stored,
        "delivered": received,
        "undelivered": pending,
        "delivered_per_s": received / elapsed if elapsed else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--web-workers", type=int, default=1)
    parser.add_argument("--drain-seconds", type=int, default=120)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: run `scripts/system-deps.sh bench` (Debian package wrk)")

    workdir = Path(tempfile.mkdtemp(prefix="posthorn-bench-"))
    backends = [("sqlite", f"sqlite:///{workdir / 'sqlite.db'}")]
    pg = os.environ.get("POSTHORN_TEST_POSTGRES_URL")
    if pg:
        backends.append(("postgresql", asyncio.run(fresh_pg(pg))))
    results = []
    try:
        for name, url in backends:
            print(
                f"[{name}] {args.seconds}s of POST /v1/emails from {args.connections} connections…",
                flush=True,
            )
            results.append(bench_backend(name, url, args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(
        f"{'backend':<11} {'accepted/s':>10} {'p99 ms':>8} {'200s':>7} {'stored':>7} "
        f"{'delivered/s':>11} {'delivered':>9} {'left':>5}"
    )
    for r in results:
        print(
            f"{r['backend']:<11} {r['accepted_per_s']:>10.0f} {r['p99_ms']:>8.1f} "
            f"{r['requests'] - r['non_2xx']:>7} {r['stored']:>7} {r['delivered_per_s']:>11.0f} "
            f"{r['delivered']:>9} {r['undelivered']:>5}"
        )


if __name__ == "__main__":
    main()
