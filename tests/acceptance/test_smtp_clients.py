"""Independent SMTP clients against the submission server: swaks and Nodemailer.

The server runs in the test's event loop (as in the integration tests); the clients are
separate programs run as subprocesses, so what they do is theirs, not ours. Each message is
then delivered by the worker into the sink, where it must arrive byte for byte as the client
wrote it and carry a DKIM signature an independent verifier accepts.

``make test`` installs swaks (``scripts/system-deps.sh``) and Nodemailer
(``scripts/node-deps.sh``): a missing client is a failure here, not a skip.
"""

from __future__ import annotations

import asyncio
import base64
import email.policy
import json
import os
import re
import shutil
import signal
import ssl
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from posthorn.settings import Settings
from posthorn.store.database import Database
from tests.support.dkim_check import dkim_verifies
from tests.support.dns import DnsServer
from tests.support.sink import SmtpSink
from tests.support.submission import (
    PASSWORD,
    RECIPIENT,
    SENDER,
    Start,
    SubmissionServer,
    Tenant,
    certificate_authority,
    deliver,
    dns_with_mx,
    email_count,
    free_port,
    queued_id,
)

pytest_plugins = ["tests.support.submission_fixtures"]

NODE_DIR = Path(__file__).resolve().parents[1] / "support" / "node"
CLIENT_TIMEOUT = 60.0
QUEUED = re.compile(r"250 (2\.0\.0 Ok: queued as \S+)")


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with dns_with_mx() as server:
        yield server


def program(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: run scripts/system-deps.sh (Debian package {package})"
        )
    return path


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "test-ca.pem"
    path.write_bytes(certificate_authority().cert_pem.bytes())
    return path


async def run(argv: list[str], stdin: bytes) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), CLIENT_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def message_bytes(from_: str) -> bytes:
    message = EmailMessage()
    message["From"] = f"Acme Billing <{from_}>"
    message["To"] = RECIPIENT
    message["Subject"] = "Invoice 2024-0042"
    message["Message-ID"] = "<invoice-42@acme.test>"
    message.set_content("Your invoice is attached.\n.\nRegards,\nAcme\n")
    message.add_attachment(
        bytes(range(256)) * 4, maintype="application", subtype="pdf", filename="invoice.pdf"
    )
    return message.as_bytes(policy=email.policy.SMTP)


async def check_delivered(
    server: SubmissionServer,
    tenant: Tenant,
    reply: str,
    sent: bytes,
    sink: SmtpSink,
    dns: DnsServer,
) -> None:
    detail = await server.services.emails.get(tenant.account_id, queued_id(reply))
    assert detail.email["source"] == "smtp"
    await deliver(server, server.services.db)
    (received,) = sink.wait_for(1)
    assert received.rcpt_tos == (RECIPIENT,)
    assert received.data.endswith(sent), "the message arrives as the client wrote it"
    assert dkim_verifies(received.data, dns)


@pytest.mark.parametrize("credential", ["sender", "apikey"])
async def test_swaks_starttls_auth_plain(
    start_smtp: Start,
    smtp_tenant: Tenant,
    mx_sink: SmtpSink,
    dns: DnsServer,
    ca_file: Path,
    credential: str,
) -> None:
    swaks = program("swaks", "swaks")
    server = await start_smtp()
    user, password = (
        (SENDER, PASSWORD)
        if credential == "sender"
        else ("apikey", smtp_tenant.keys["sending_access"])
    )
    sent = message_bytes(SENDER)
    code, out, err = await run(
        [
            swaks,
            "--server", "127.0.0.1",
            "--port", str(server.port),
            "--ehlo", "swaks.test",
            "--tls", "--tls-verify", "--tls-ca-path", str(ca_file),
            "--auth", "PLAIN", "--auth-user", user, "--auth-password", password,
            "--from", SENDER, "--to", RECIPIENT,
            "--data", "-",
            "--timeout", "30",
        ],
        sent.removesuffix(b"\r\n"),  # swaks ends the data with CRLF "." CRLF itself
    )  # fmt: skip
    assert code == 0, out + err
    assert password not in err
    match = QUEUED.search(out)
    assert match, out
    await check_delivered(server, smtp_tenant, match.group(1), sent, mx_sink, dns)


async def test_swaks_wrong_password_is_refused(
    start_smtp: Start, smtp_tenant: Tenant, ca_file: Path
) -> None:
    swaks = program("swaks", "swaks")
    server = await start_smtp()
    code, out, _ = await run(
        [
            swaks,
            "--server", "127.0.0.1", "--port", str(server.port),
            "--tls", "--tls-verify", "--tls-ca-path", str(ca_file),
            "--auth", "PLAIN", "--auth-user", SENDER, "--auth-password", "wrong password",
            "--from", SENDER, "--to", RECIPIENT, "--timeout", "30",
        ],
        b"",
    )  # fmt: skip
    assert code != 0
    assert "535 5.7.8" in out


@pytest.mark.parametrize(
    ("credential", "mechanism", "implicit_tls"),
    [("sender", "PLAIN", False), ("apikey", "LOGIN", True)],
)
async def test_nodemailer(
    start_smtp: Start,
    smtp_tenant: Tenant,
    mx_sink: SmtpSink,
    dns: DnsServer,
    ca_file: Path,
    credential: str,
    mechanism: str,
    implicit_tls: bool,
) -> None:
    node = program("node", "nodejs")
    if not (NODE_DIR / "node_modules" / "nodemailer").is_dir():
        pytest.fail("Nodemailer is not installed: run scripts/node-deps.sh")
    server = await start_smtp(smtps_port=free_port())
    user, password = (
        (SENDER, PASSWORD)
        if credential == "sender"
        else ("apikey", smtp_tenant.keys["full_access"])
    )
    config = {
        "host": "127.0.0.1",
        "port": server.settings.smtps_port if implicit_tls else server.port,
        "secure": implicit_tls,
        "user": user,
        "pass": password,
        "authMethod": mechanism,
        "ca": str(ca_file),
        "from": f"Acme Billing <{SENDER}>",
        "to": RECIPIENT,
        "subject": "Invoice 2024-0042 — paid",
        "text": "Your invoice is attached.\n.\nRegards,\nAcme\n",
        "html": "<p>Your invoice is <b>attached</b>.</p>",
        "attachmentBase64": base64.b64encode(bytes(range(256)) * 4).decode(),
        "attachmentName": "invoice.pdf",
    }
    code, out, err = await run([node, str(NODE_DIR / "send.js")], json.dumps(config).encode())
    assert code == 0, out + err
    result = json.loads(out)
    match = QUEUED.search(result["response"])
    assert match, result
    # Nodemailer writes CRLF on the wire whatever its composer produced (RFC 5321 §2.3.8).
    sent = re.sub(rb"\r?\n", b"\r\n", base64.b64decode(result["raw"]))
    await check_delivered(server, smtp_tenant, match.group(1), sent, mx_sink, dns)


async def wait_for_port(port: int, process: asyncio.subprocess.Process) -> None:
    for _ in range(300):  # up to about 30 s: the process imports, checks the schema, listens
        if process.returncode is not None:
            raise AssertionError(f"posthorn smtp exited with {process.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
    raise AssertionError("posthorn smtp did not listen")


async def test_posthorn_smtp_role_generates_its_certificate_and_accepts_swaks(
    settings: Settings, db: Database, smtp_tenant: Tenant, tmp_path: Path
) -> None:
    """The real ``posthorn smtp`` process (uvloop, settings from the environment) with no
    certificate configured: it makes one, serves STARTTLS and implicit TLS, stops on SIGTERM."""
    swaks = program("swaks", "swaks")
    port, smtps_port = free_port(), free_port()
    data_dir = tmp_path / "smtp-role"
    env = {
        **os.environ,
        "POSTHORN_CONFIG": str(tmp_path / "absent.toml"),
        "POSTHORN_DATA_DIR": str(data_dir),
        "POSTHORN_DATABASE_URL": settings.database_url,
        "POSTHORN_SECRET_KEY": settings.secret_key,
        "POSTHORN_HOSTNAME": "localhost",
        "POSTHORN_SMTP_HOST": "127.0.0.1",
        "POSTHORN_SMTP_PORT": str(port),
        "POSTHORN_SMTPS_PORT": str(smtps_port),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "posthorn", "smtp", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        await wait_for_port(port, process)
        generated = data_dir / "smtp-tls.pem"
        # A client that trusts the generated certificate, and checks the host name, connects.
        context = ssl.create_default_context(cafile=str(generated))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", smtps_port, ssl=context, server_hostname="localhost"
        )
        assert (await reader.readline()).startswith(b"220 localhost ESMTP")
        writer.close()
        sent = message_bytes(SENDER)
        code, out, err = await run(
            [
                swaks,
                "--server", "127.0.0.1", "--port", str(port), "--ehlo", "swaks.test",
                "--tls", "--auth", "LOGIN", "--auth-user", SENDER, "--auth-password", PASSWORD,
                "--from", SENDER, "--to", RECIPIENT, "--data", "-", "--timeout", "30",
            ],
            sent.removesuffix(b"\r\n"),
        )  # fmt: skip
        assert code == 0, out + err
        assert QUEUED.search(out), out
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, log = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, log.decode()
    text = log.decode()
    assert "generated a self-signed TLS certificate for localhost" in text
    assert "smtp queued id=" in text
    assert PASSWORD not in text
    assert await email_count(db) == 1
