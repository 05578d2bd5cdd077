"""The DNS records a sending domain publishes, and whether what the DNS says matches them.

SPF (RFC 7208) authorises our servers, MX records send bounces back to us, DKIM (RFC 6376)
publishes the signing key, DMARC (RFC 7489) is suggested but not required for verification.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

REQUIRED = ("spf", "mx", "dkim")


@dataclass(frozen=True, slots=True)
class Observed:
    """What the DNS answered; ``None`` where the name did not resolve."""

    root_txt: list[str] | None
    root_mx: list[tuple[int, str]] | None
    txt_by_name: dict[str, list[str] | None]


def spf_value(include_host: str) -> str:
    return f"v=spf1 include:{include_host} ~all"


def dkim_record(selector: str, value: str) -> dict[str, Any]:
    return {"type": "TXT", "name": f"{selector}._domainkey", "value": value, "purpose": "dkim"}


def build_records(
    domain: str,
    *,
    spf_include: str,
    mx_hosts: Sequence[tuple[str, int]],
    dkim: Sequence[tuple[str, str]],
) -> list[dict[str, Any]]:
    """SPF, MX, DKIM (one per ``(selector, value)``) and a suggested DMARC record."""
    records: list[dict[str, Any]] = [
        {"type": "TXT", "name": "@", "value": spf_value(spf_include), "purpose": "spf"}
    ]
    for host, priority in mx_hosts:
        records.append(
            {"type": "MX", "name": "@", "value": host, "priority": priority, "purpose": "mx"}
        )
    records.extend(dkim_record(selector, value) for selector, value in dkim)
    records.append(
        {
            "type": "TXT",
            "name": "_dmarc",
            "value": f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}",
            "purpose": "dmarc",
        }
    )
    return records


def _tags(value: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in value.split(";"):
        key, sep, val = part.partition("=")
        if sep:
            tags[key.strip().lower()] = "".join(val.split())
    return tags


def _spf_matches(expected: str, found: list[str]) -> bool:
    wanted = next(t for t in expected.split() if t.startswith("include:")).lower()
    spf = [t for t in found if t.lower().startswith("v=spf1")]
    # RFC 7208 §4.5: more than one SPF record is a permanent error for receivers.
    return len(spf) == 1 and wanted in spf[0].lower().split()


def _dkim_matches(expected: str, found: list[str]) -> bool:
    want = _tags(expected)
    return any(_tags(f).get("p") == want.get("p") and _tags(f).get("p") for f in found)


def _dmarc_matches(found: list[str]) -> bool:
    return any(f.replace(" ", "").upper().startswith("V=DMARC1") for f in found)


def fqdn(record_name: str, domain: str) -> str:
    return domain if record_name == "@" else f"{record_name}.{domain}"


def evaluate(
    records: Sequence[dict[str, Any]], observed: Observed, domain: str
) -> list[dict[str, Any]]:
    """Each record with ``verified`` and, when it fails, ``found`` (what the DNS said)."""
    checked: list[dict[str, Any]] = []
    mx_found = [host.rstrip(".").lower() for _, host in observed.root_mx or []]
    for record in records:
        result = {k: v for k, v in record.items() if k not in ("verified", "found")}
        purpose = record["purpose"]
        if purpose == "spf":
            found = observed.root_txt or []
            ok = _spf_matches(record["value"], found)
            shown: Any = [t for t in found if t.lower().startswith("v=spf1")]
        elif purpose == "mx":
            ok = record["value"].rstrip(".").lower() in mx_found
            shown = [f"{p} {h}" for p, h in observed.root_mx or []]
        else:
            found = observed.txt_by_name.get(fqdn(record["name"], domain)) or []
            ok = (
                _dmarc_matches(found)
                if purpose == "dmarc"
                else _dkim_matches(record["value"], found)
            )
            shown = found
        result["verified"] = ok
        if not ok:
            result["found"] = shown
        checked.append(result)
    return checked


def all_required_verified(checked: Sequence[dict[str, Any]]) -> bool:
    """SPF, every MX and the active RSA DKIM record; DMARC, the optional Ed25519 record and
    a key still pending after a rotation do not count."""
    relevant = [
        r
        for r in checked
        if r["purpose"] in REQUIRED and not r.get("pending") and not r.get("optional")
    ]
    return all(r["verified"] for r in relevant) and {r["purpose"] for r in relevant} >= set(
        REQUIRED
    )
