"""The walk-through of the README, for real: `posthorn serve` as a subprocess, the CLI, curl-like
HTTP calls, an MX looked up on a DNS server and a message arriving at an SMTP sink."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.support.dkim_check import dkim_verifies
from tests.support.dns import DnsServer
from tests.support.domains import publish
from tests.support.sink import SmtpSink


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(starttls=True) as server:
        yield server


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer() as server:
        server.add("example.test", "MX", "mx1.example.test", priority=10)
        server.add("mx1.example.test", "A", "127.0.0.1")
        server.add("other.test", "MX", "mx.other.test", priority=5)
        server.add("mx.other.test", "A", "127.0.0.1")
        yield server


@pytest.fixture
def env(tmp_path: Path, database_url: str, sink: SmtpSink, dns: DnsServer) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("POSTHORN_")},
        "POSTHORN_DATA_DIR": str(tmp_path / "data"),
        "POSTHORN_DATABASE_URL": database_url,
        "POSTHORN_HTTP_PORT": str(free_port()),
        "POSTHORN_SMTP_PORT": str(free_port()),
        "POSTHORN_INBOUND_PORT": str(free_port()),
        "POSTHORN_HOSTNAME": "mail.posthorn.test",
        "POSTHORN_MX_PORT": str(sink.port),
        "POSTHORN_MX_ALLOW_PRIVATE": "true",
        "POSTHORN_DNS_NAMESERVERS": dns.nameserver,
        "POSTHORN_WORKER_POLL_SECONDS": "0.1",
    }


def posthorn(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "posthorn", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-m", "posthorn", "serve"], env=env)
    url = f"http://127.0.0.1:{env['POSTHORN_HTTP_PORT']}/healthz"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "posthorn serve exited early"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("posthorn serve did not answer /healthz within 60 s")
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def json_out(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, f"--json must print exactly one line on stdout: {result.stdout!r}"
    return dict(json.loads(lines[0]))


def test_send_through_the_api_and_find_it_delivered(
    env: dict[str, str], server: subprocess.Popen[bytes], sink: SmtpSink, dns: DnsServer
) -> None:
    account = json_out(posthorn(env, "admin", "create-account", "acme", "--json"))
    key = json_out(
        posthorn(
            env,
            "admin",
            "create-key",
            "--account",
            account["id"],
            "--name",
            "prod",
            "--permission",
            "full_access",
            "--json",
        )
    )
    assert key["key"].startswith("phk_") and len(key["key"]) >= 40
    base = f"http://127.0.0.1:{env['POSTHORN_HTTP_PORT']}"
    headers = {"X-API-KEY": key["key"]}

    # The domain set-up flow of the README: create, publish the records, verify.
    domain = httpx.post(f"{base}/v1/domains", headers=headers, json={"domain": "acme.test"})
    assert domain.status_code == 200, domain.text
    publish(dns, "acme.test", domain.json()["dns_records"])
    verified = httpx.post(f"{base}/v1/domains/{domain.json()['id']}/verify", headers=headers)
    assert verified.json()["status"] == "verified", verified.text

    attachment = b"%PDF-1.4 fake invoice \x00\x01\x02" * 50
    response = httpx.post(
        f"{base}/v1/emails",
        headers=headers,
        json={
            "from": "Acme Café <hello@acme.test>",
            "to": ["user@example.test"],
            "cc": ["boss@other.test"],
            "bcc": ["audit@example.test"],
            "reply_to": "support@acme.test",
            "subject": "Xin chào — your order ✓",
            "html": "<p>Chào bạn, cảm ơn!</p>",
            "text": "Chào bạn, cảm ơn!",
            "headers": {"X-Campaign": "welcome"},
            "attachments": [
                {
                    "filename": "hóa đơn.pdf",
                    "content": base64.b64encode(attachment).decode(),
                    "content_type": "application/pdf",
                }
            ],
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    sent = response.json()
    assert sent["status"] == "queued"

    # One transaction per domain: example.test's two recipients share one message.
    received = sink.wait_for(2, timeout=30)
    by_rcpt = {rcpt: m for m in received for rcpt in m.rcpt_tos}
    assert set(by_rcpt) == {"user@example.test", "boss@other.test", "audit@example.test"}
    for item in received:
        # VERP: the envelope sender names the delivery (or the group), so a bounce comes back.
        assert item.mail_from.startswith("bounce+") and item.mail_from.endswith(
            "@mail.posthorn.test"
        )
        assert item.tls, "STARTTLS was offered, so it must be used"
        assert dkim_verifies(item.data, dns)
    message = email.message_from_bytes(
        by_rcpt["user@example.test"].data, policy=email.policy.default
    )
    assert message["From"] == "Acme Café <hello@acme.test>"
    assert message["To"] == "user@example.test"
    assert message["Cc"] == "boss@other.test"
    assert message["Reply-To"] == "support@acme.test"
    assert message["Subject"] == "Xin chào — your order ✓"
    assert message["X-Campaign"] == "welcome"
    assert message["Bcc"] is None and b"audit@example.test" not in by_rcpt["user@example.test"].data
    assert message["Message-ID"].endswith("@mail.posthorn.test>")
    body = message.get_body(("plain",))
    assert body is not None and body.get_content().strip() == "Chào bạn, cảm ơn!"
    html = message.get_body(("html",))
    assert html is not None and "cảm ơn" in html.get_content()
    (part,) = list(message.iter_attachments())
    assert part.get_filename() == "hóa đơn.pdf"
    assert part.get_content() == attachment

    deadline = time.monotonic() + 30
    detail: dict[str, Any] = {}
    while time.monotonic() < deadline:
        detail = httpx.get(f"{base}/v1/emails/{sent['id']}", headers=headers).json()
        if detail["status"] == "Delivered" and all(
            d["status"] == "delivered" for d in detail["deliveries"]
        ):
            break
        time.sleep(0.2)
    assert detail["status"] == "Delivered", detail
    for delivery in detail["deliveries"]:
        assert delivery["attempts"] == 1 and delivery["last_code"] == 250
        assert delivery["delivered_at"] is not None
    assert detail["delivered_at"] is not None
    types = [e["type"] for e in detail["events"]]
    assert types.count("queued") == 3 and types.count("delivered") == 3

    listed = httpx.get(f"{base}/v1/emails?status=delivered", headers=headers).json()
    assert [e["id"] for e in listed["data"]] == [sent["id"]]


def test_cli_send_and_graceful_stop(
    env: dict[str, str], server: subprocess.Popen[bytes], sink: SmtpSink, dns: DnsServer
) -> None:
    account = json_out(posthorn(env, "admin", "create-account", "acme", "--json"))
    key = json_out(
        posthorn(env, "admin", "create-key", "--account", account["id"], "--name", "k", "--json")
    )
    base = f"http://127.0.0.1:{env['POSTHORN_HTTP_PORT']}"
    headers = {"X-API-KEY": key["key"]}
    domain = httpx.post(f"{base}/v1/domains", headers=headers, json={"domain": "acme.test"}).json()
    publish(dns, "acme.test", domain["dns_records"])
    httpx.post(f"{base}/v1/domains/{domain['id']}/verify", headers=headers)
    unverified = posthorn(
        env,
        "send",
        "--account",
        account["id"],
        "--from",
        "ops@elsewhere.test",
        "--to",
        "user@example.test",
        "--subject",
        "x",
        "--text",
        "x",
    )
    assert unverified.returncode == 2 and "elsewhere.test" in unverified.stderr
    queued = json_out(
        posthorn(
            env,
            "send",
            "--account",
            account["id"],
            "--from",
            "ops@acme.test",
            "--to",
            "user@example.test",
            "--subject",
            "smoke",
            "--text",
            "it works",
            "--json",
        )
    )
    assert queued["status"] == "queued"
    (message,) = sink.wait_for(1, timeout=30)
    assert b"it works" in message.data
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=30) == 0


def test_cli_creates_users(env: dict[str, str]) -> None:
    assert posthorn(env, "migrate").returncode == 0
    account = json_out(posthorn(env, "admin", "create-account", "acme", "--json"))
    user = json_out(
        posthorn(
            env,
            "admin",
            "create-user",
            "--account",
            account["id"],
            "--username",
            "Ops",
            "--password",
            "long enough pass",
            "--json",
        )
    )
    assert user["username"] == "ops" and user["account_id"] == account["id"]
    again = posthorn(
        env,
        "admin",
        "create-user",
        "--account",
        account["id"],
        "--username",
        "ops",
        "--password",
        "long enough pass",
    )
    assert again.returncode == 2 and again.stdout == ""


def test_cli_imports_a_list_with_progress(
    env: dict[str, str], server: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    account = json_out(posthorn(env, "admin", "create-account", "acme", "--json"))
    key = json_out(
        posthorn(env, "admin", "create-key", "--account", account["id"], "--name", "k", "--json")
    )
    base = f"http://127.0.0.1:{env['POSTHORN_HTTP_PORT']}"
    created = httpx.post(
        f"{base}/v1/lists", headers={"X-API-KEY": key["key"]}, json={"name": "news"}
    )
    assert created.status_code == 200, created.text
    rows = [
        "email,first_name",
        *(f"user{i}@example.test,U{i}" for i in range(300)),
        "not-an-address,X",
        "user1@example.test,again",
    ]
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    result = posthorn(
        env,
        "lists",
        "import",
        str(csv_file),
        "--list",
        created.json()["id"],
        "--account",
        account["id"],
        "--json",
    )
    report = json_out(result)
    assert (report["imported"], report["invalid"], report["duplicate"]) == (300, 1, 1)
    assert "100.0%" in result.stderr
    listed = httpx.get(
        f"{base}/v1/lists/{created.json()['id']}/contacts", headers={"X-API-KEY": key["key"]}
    )
    assert listed.json()["total"] == 300


def test_cli_reports_errors_clearly(env: dict[str, str]) -> None:
    assert posthorn(env, "migrate").returncode == 0
    bad = posthorn(env, "admin", "create-key", "--account", "nope", "--name", "k", "--json")
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert "account not found" in bad.stderr


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid …; comm may hold spaces, so split after its ")".
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_no_role_outlives_a_killed_serve(server: subprocess.Popen[bytes]) -> None:
    roles = _children(server.pid)
    assert len(roles) == 4  # web, worker, smtp, inbound
    server.kill()  # SIGKILL: serve gets no chance to stop them itself
    server.wait(timeout=10)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and any(_alive(pid) for pid in roles):
            time.sleep(0.2)
        assert not [pid for pid in roles if _alive(pid)], "a role kept running without serve"
    finally:
        for pid in roles:  # whatever the outcome, leave none of them behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
