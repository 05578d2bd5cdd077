"""Schemathesis against `/openapi.json` of a running `posthorn web`: no request, with a
full_access key or with none, gets a 5xx.

Bounded and repeatable: a fixed seed, deterministic generation, a fixed number of examples
per operation, no example database, no shrinking. The account owns one object of each kind
the fuzzer cannot make on its own, and path parameters naming such an object take its id
(except for DELETE), so that updates and actions on real rows are fuzzed too, not only 404s.
Only the web role runs: nothing queued is delivered, and every name resolves through a DNS
server on loopback that knows none of them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from posthorn.api.app import create_app
from posthorn.settings import Settings
from tests.support.dns import DnsServer
from tests.support.domains import publish
from tests.support.web_process import WebProcess

SEED = 20261207
EXAMPLES = 8
REQUEST_SECONDS = 30
DOMAIN = "fuzz.example.test"
SENDER = f"Fuzz <f@{DOMAIN}>"
# Sends whose from and to are made valid on every other example, so that the rest of the
# body reaches the composer instead of stopping at an unverified sender.
SENDS = {"/v1/emails", "/v1/emails/batch", "/v1/bulk-jobs"}
CREDENTIAL_HEADERS = {"x-api-key", "authorization"}


class Fuzzed:
    def __init__(self, web: WebProcess, key: str, ids: dict[str, str]) -> None:
        self.web = web
        self.key = key
        self.ids = ids
        self.examples = 0
        self.session = requests.Session()
        # No cookie may carry a login from one call into the next ("no key" means none).
        self.session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))


def _create(client: httpx.Client, path: str, body: dict[str, Any]) -> str:
    response = client.post(path, json=body)
    assert response.status_code == 200, (path, response.text)
    return str(response.json()["id"])


def _objects(client: httpx.Client, dns: DnsServer) -> dict[str, str]:
    """One object of each kind whose id a path names, on a verified sending domain."""
    domain = client.post("/v1/domains", json={"domain": DOMAIN})
    assert domain.status_code == 200, domain.text
    publish(dns, DOMAIN, domain.json()["dns_records"])
    domain_id = domain.json()["id"]
    verified = client.post(f"/v1/domains/{domain_id}/verify")
    assert verified.json()["status"] == "verified", verified.text
    template_id = _create(
        client, "/v1/templates", {"name": "t", "subject": "s", "html": "<p>x</p>"}
    )
    list_id = _create(client, "/v1/lists", {"name": "l"})
    contact = client.post(f"/v1/lists/{list_id}/contacts", json={"email": "c@example.test"})
    assert contact.status_code == 200, contact.text
    later = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    # A relay must resolve to a public address; only the web role runs, so none is dialled.
    dns.add("relay.example.test", "A", "93.184.216.34")
    return {
        "domain_id": domain_id,
        "template_id": template_id,
        "list_id": list_id,
        "email": "c@example.test",
        "relay_id": _create(client, "/v1/relays", {"name": "r", "host": "relay.example.test"}),
        "config_id": _create(client, "/v1/send-configs", {"name": "c", "template_id": template_id}),
        "sender_id": _create(
            client,
            "/v1/senders",
            {"account": f"s@{DOMAIN}", "domain": DOMAIN, "password": "fuzz-password-1"},
        ),
        "email_id": _create(
            client,
            "/v1/emails",
            {
                "from": SENDER,
                "to": ["r@example.test"],
                "subject": "s",
                "text": "x",
                "scheduled_at": later,
            },
        ),
    }


# The schema is read from the application at import (parametrizing happens at collection);
# a test checks that the running server serves the very same document.
with tempfile.TemporaryDirectory() as _data:
    SPEC = create_app(Settings(data_dir=Path(_data), secret_key="x" * 40)).openapi()
schema = schemathesis.openapi.from_dict(
    SPEC,
    config=SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "suppress-health-check": ["all"],
            "generation": {
                "max-examples": EXAMPLES,
                "deterministic": True,
                "no-shrink": True,
                "database": "none",
            },
            "phases": {"stateful": {"enabled": False}},
        }
    ),
)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    with DnsServer() as dns:
        env = {
            "POSTHORN_DNS_NAMESERVERS": dns.nameserver,
            "POSTHORN_MX_ALLOW_PRIVATE": "true",
            "POSTHORN_SECRET_KEY": "fuzz-secret-" + "x" * 32,
        }
        with WebProcess(tmp_path_factory.mktemp("fuzz") / "data", env) as web:
            account = web.cli("admin", "create-account", "fuzz")
            key = web.cli("admin", "create-key", "--account", account["id"], "--name", "fuzz")
            headers = {"X-API-KEY": key["key"]}
            with httpx.Client(base_url=web.url, headers=headers, timeout=30) as client:
                ids = _objects(client, dns)
            yield Fuzzed(web, key["key"], ids)


def _addressed(body: Any) -> None:
    for item in body if isinstance(body, list) else [body]:
        if isinstance(item, dict):
            item["from"] = SENDER
            if "to" in item:
                item["to"] = ["r@example.test"]


def _exercise(case: Any, fuzzed: Fuzzed) -> None:
    """Send the case without a key, then with the full_access key: neither may get a 5xx."""
    fuzzed.examples += 1
    if case.method.upper() == "POST" and case.path in SENDS and fuzzed.examples % 2:
        _addressed(case.body)
    if case.method.upper() != "DELETE":
        for name in case.path_parameters or {}:
            if name in fuzzed.ids:
                case.path_parameters[name] = fuzzed.ids[name]
    case.headers = {
        k: v for k, v in (case.headers or {}).items() if k.lower() not in CREDENTIAL_HEADERS
    }
    for who, credentials in (
        ("no key", {}),
        ("a full_access key", {"X-API-KEY": fuzzed.key, "Authorization": f"Bearer {fuzzed.key}"}),
    ):
        response = case.call(
            base_url=fuzzed.web.url,
            session=fuzzed.session,
            headers=credentials,
            timeout=REQUEST_SECONDS,
        )
        assert response.status_code < 500, (
            f"{response.status_code} for {who}: {case.as_curl_command()}\n{response.text[:300]}"
        )


def test_the_fuzzed_schema_is_the_served_one(fuzzed: Fuzzed) -> None:
    served = httpx.get(f"{fuzzed.web.url}/openapi.json", timeout=30).json()
    assert served == SPEC


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_gets_a_server_error(case: Any, fuzzed: Fuzzed) -> None:
    _exercise(case, fuzzed)
