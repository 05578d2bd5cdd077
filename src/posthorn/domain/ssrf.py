"""Which webhook URLs, relay hosts and addresses Posthorn may connect to (server-side request
forgery).

A webhook URL or an account's relay host is chosen by the account, so without a check anyone
could make the server connect into its own network: the loopback interface, a private LAN, a
cloud metadata service at 169.254.169.254. A URL must be http(s) with a host, and every address
a host resolves to must be public. The check runs when the URL or relay is saved and again on
the address actually connected to at send time, since DNS may answer differently by then (DNS
rebinding).

An operator may allow private addresses (a relay inside their own network, a test sink), but
never the cloud metadata services: they hand out the instance's credentials to whoever asks
from inside it, and no mail relay or webhook receiver lives there.

Pure: resolving the host is the caller's business.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048
SCHEMES = {"http": 80, "https": 443}
# RFC 6598: shared address space for carrier-grade NAT; not "private" for Python, but not
# reachable from the internet either, and often an ISP's or a cloud's internal network.
CGNAT = ipaddress.ip_network("100.64.0.0/10")
# RFC 6052 §2.1 well-known NAT64 prefix and RFC 8215 local-use prefix: the IPv4 address is
# the last 32 bits, and a NAT64 gateway would connect to it.
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
# Instance metadata and platform endpoints of the public clouds, refused even where private
# addresses are allowed. 169.254.169.254: AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean and
# most others; fd00:ec2::254: AWS IMDS over IPv6; 169.254.170.2: AWS ECS task credentials;
# 169.254.170.23 and fd00:ec2::23: AWS EKS Pod Identity; 100.100.100.200: Alibaba Cloud;
# 169.254.0.23: Tencent Cloud; 168.63.129.16: Azure's WireServer; 192.0.0.192: Oracle Cloud
# Classic.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(text)
    for text in (
        "169.254.169.254",
        "fd00:ec2::254",
        "169.254.170.2",
        "169.254.170.23",
        "fd00:ec2::23",
        "100.100.100.200",
        "169.254.0.23",
        "168.63.129.16",
        "192.0.0.192",
    )
)
METADATA = "cloud metadata"


@dataclass(frozen=True, slots=True)
class WebhookUrl:
    scheme: str
    host: str  # lower case, ASCII (IDNA), IPv6 without brackets
    port: int


def parse_url(url: str) -> WebhookUrl:
    """The parts of a webhook URL that matter for the check; ``ValueError`` says what is
    wrong with it."""
    text = url.strip()
    if not text:
        raise ValueError("the URL is empty")
    if len(text) > MAX_URL_LENGTH:
        raise ValueError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise ValueError("the URL contains spaces or control characters")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError("the URL must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the URL must not contain a user name or password")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError("the URL has no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("the URL has an invalid port") from exc
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError("the URL's host is not a valid domain name") from exc
    return WebhookUrl(scheme=scheme, host=host.lower(), port=port or SCHEMES[scheme])


def literal_ip(host: str) -> IPAddress | None:
    """The address when the host is an IP literal (``10.0.0.1``, ``::1``), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries: ::ffff:127.0.0.1 is loopback (RFC 4291
    §2.5.5.2), so are the 6to4 (RFC 3056) and NAT64 (RFC 6052) forms of it."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    embedded = ip.ipv4_mapped or ip.sixtofour
    if embedded is None and any(ip in net for net in NAT64):
        embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return embedded


def is_metadata(ip: IPAddress) -> bool:
    """Whether ``ip`` is a cloud metadata endpoint, or an IPv6 form of one."""
    embedded = _embedded_ipv4(ip)
    return ip in METADATA_ADDRESSES or (embedded is not None and embedded in METADATA_ADDRESSES)


def address_problem(address: str | IPAddress, *, allow_private: bool = False) -> str | None:
    """Why nothing may connect to this address, or None when it may. With ``allow_private``
    only the cloud metadata endpoints are refused."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "not an IP address"
    if allow_private:
        return METADATA if is_metadata(ip) else None
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        problem = address_problem(embedded)
        if problem is not None:
            return problem
    checks = (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),  # includes 169.254.169.254, the metadata services
        (ip.is_multicast, "multicast"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in CGNAT, "carrier-grade NAT"),
        (ip.is_private, "private"),  # RFC 1918, fc00::/7 (RFC 4193) and the like
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "not globally routable"),
    )
    for failed, problem in checks:
        if failed:
            return problem
    # Public, as far as the address ranges go; 168.63.129.16 is one such.
    return METADATA if is_metadata(ip) else None


def first_refused(
    addresses: Iterable[str | IPAddress], *, allow_private: bool = False
) -> tuple[str, str] | None:
    """The first address that must not be used, with why; None when every one may be.

    A host is refused when *any* of its addresses is: the connection could go to any of
    them, and a public address beside a private one is the usual shape of an attack."""
    for address in addresses:
        problem = address_problem(address, allow_private=allow_private)
        if problem is not None:
            return str(address), problem
    return None
