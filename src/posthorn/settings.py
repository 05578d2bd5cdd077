"""Typed settings, built once at start-up and passed in.

Every setting is an environment variable with the ``POSTHORN_`` prefix; an optional
``posthorn.toml`` in the working directory (or the file named by ``POSTHORN_CONFIG``) may set
the same names in lower case. The environment wins over the file. No other module reads the
environment: the composition root (``cli.py``) calls :func:`load_settings` and hands the
object down.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

SECRET_KEY_FILE = "secret.key"  # noqa: S105 - a file name, not a secret


class Settings(BaseSettings):
    """Posthorn's configuration. Field docs are the settings reference in the README."""

    model_config = SettingsConfigDict(env_prefix="POSTHORN_", extra="ignore", frozen=True)

    data_dir: Path = Field(
        Path("./data"),
        description="Where the SQLite file, the generated secret key and TLS certificate live.",
    )
    database_url: str = Field(
        "", description="SQLAlchemy URL; default sqlite:///<DATA_DIR>/posthorn.db."
    )
    secret_key: str = Field(
        "", description="Server secret; generated into DATA_DIR/secret.key when empty."
    )
    http_host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    http_port: int = Field(8000, description="Port of the HTTP API.")
    smtp_host: str = Field("127.0.0.1", description="Address of the SMTP submission server.")
    smtp_port: int = Field(2525, description="Port of the SMTP submission server (STARTTLS).")
    smtps_port: int | None = Field(None, description="Implicit-TLS SMTP port; off when unset.")
    smtp_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="SMTP session processes. With more than one, `posthorn smtp` runs the "
        "sessions in that many child processes sharing the port, and commits their messages "
        "itself, in shared group commits. One process uses one core; two or more pay off on "
        "a machine with cores to spare.",
    )
    smtp_auth_require_tls: bool = Field(True, description="Offer AUTH only after TLS.")
    inbound_port: int = Field(2526, description="Port for bounce and complaint intake.")
    inbound_max_connections_per_client: int = Field(
        100,
        ge=1,
        description="Open connections to INBOUND_PORT per client IP (IPv6: per /64); one more "
        "is answered 421 and closed.",
    )
    inbound_greeting_delay: float = Field(
        1.0,
        ge=0,
        le=30,
        description="Seconds the inbound listener waits before its 220 greeting; a client "
        "that talks first (RFC 5321 section 3.1) is answered 554 and closed. Mail servers "
        "wait minutes for a greeting; spam tools do not.",
    )
    tls_cert: Path | None = Field(None, description="PEM certificate for SMTP TLS.")
    tls_key: Path | None = Field(None, description="PEM private key for SMTP TLS.")
    public_url: str = Field(
        "http://127.0.0.1:8000", description="Base URL for tracking and unsubscribe links."
    )
    dns_nameservers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Resolvers as host or host:port, comma separated; default: the system's.",
    )
    dns_timeout: float = Field(5.0, description="Seconds for one DNS look-up.")
    mx_port: int = Field(25, description="Port used to reach recipient MX hosts.")
    mx_allow_private: bool = Field(
        False, description="Allow delivery to loopback/private addresses (tests only)."
    )
    relay_url: str | None = Field(
        None,
        description="smtp://user:pass@host:587 (or smtps://); all mail goes through it. Set by "
        "the operator, so trusted: it may point at loopback or a private network (a local "
        "Postfix) without RELAY_ALLOW_PRIVATE.",
    )
    relay_allow_private: bool = Field(
        False,
        description="Allow an account's relays (`/v1/relays`) on loopback, private or "
        "link-local addresses: for tests, or a deployment whose accounts relay inside its "
        "network. Checked when a relay is saved and again on the address connected to. Cloud "
        "metadata addresses (169.254.169.254, fd00:ec2::254 and the like) are refused even "
        "then.",
    )
    relay_tls_verify: bool = Field(
        True, description="Check the relay's TLS certificate (turn off only for a test relay)."
    )
    relay_ca_file: Path | None = Field(
        None, description="PEM file of CAs to trust for the relay, besides the system's."
    )
    hostname: str = Field(
        default_factory=socket.getfqdn, description="EHLO name and Message-ID domain."
    )
    webhook_allow_private: bool = Field(
        False, description="Allow webhook URLs on loopback/private addresses (tests only)."
    )
    max_message_bytes: int = Field(
        25 * 1024 * 1024, description="Largest accepted request body / message, in bytes."
    )
    max_template_bytes: int = Field(
        512 * 1024,
        ge=1024,
        le=4 * 1024 * 1024,
        description="Largest template source (a stored template's html or text, or the "
        "inline body of a personalised bulk job), in UTF-8 bytes; a larger one is refused "
        "with 422 naming the field. Sources are also limited to 30,000 template tokens and "
        "10 s of parsing, and are parsed in child processes, never in a serving process.",
    )
    max_recipients: int = Field(50, description="Most recipients (to+cc+bcc) per email.")
    intake_batch_size: int = Field(
        256, description="Most emails committed together in one group commit."
    )
    intake_batch_wait_ms: float = Field(
        2.0, description="How long a group commit waits for company, in milliseconds."
    )
    worker_concurrency: int = Field(50, description="Deliveries in flight per worker process.")
    worker_lease_seconds: int = Field(
        30,
        ge=3,
        description="How long a claimed delivery stays leased before it returns to the queue. "
        "The worker renews the leases of its deliveries in flight every third of this, so a "
        "slow send keeps them; after a crash they come back within this many seconds. Hosts' "
        "clocks must agree to well within it (NTP).",
    )
    worker_poll_seconds: float = Field(0.5, description="Idle wait between queue polls.")
    destination_recipient_limit: int = Field(
        50,
        ge=1,
        le=100,
        description="Most recipients of one email sent in one SMTP transaction (one MAIL FROM, "
        "an RCPT TO each) when they are at one domain and get the same message (no tracking); "
        "1 sends each alone. At most 100, the number RFC 5321 section 4.5.3.1.8 has every "
        "server accept.",
    )
    smtp_timeout_scale: float = Field(
        1.0, description="Multiplies the RFC 5321 section 4.5.3.2 timeouts (tests shorten them)."
    )
    retry_schedule_minutes: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [1, 5, 15, 30, 60, 120, 240, 480],
        description="Backoff between attempts; the last step repeats.",
    )
    retry_max_age_hours: int = Field(120, description="Give up on a delivery after this age.")
    web_workers: int = Field(1, description="HTTP worker processes started by `serve`.")
    spf_include: str = Field(
        "", description="Host in the SPF include: of every domain; default _spf.<HOSTNAME>."
    )
    return_path_mx: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="MX records of every domain (host:priority); default <HOSTNAME>:10.",
    )
    dkim_selector_prefix: str = Field("ph", description="DKIM selectors are <prefix><yyyymmdd><n>.")
    plans: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {
            "ET20": {
                "name": "ET20 - Starter",
                "daily_limit": 20000,
                "hourly_limit": 833,
                "monthly_limit": 600000,
            }
        },
        description="Quota plans as JSON: code → {name, daily_limit, hourly_limit, monthly_limit}.",
    )
    default_plan: str = Field("ET20", description="The plan of a new domain.")
    sender_daily_limit: int = Field(500, description="Default daily limit of a new sender.")
    sender_hourly_limit: int = Field(50, description="Default hourly limit of a new sender.")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="IPs/CIDRs of reverse proxies whose X-Forwarded-For is believed.",
    )
    metrics_token: str = Field(
        "",
        description="Bearer token that opens `/metrics` to clients on other hosts "
        "(`Authorization: Bearer <token>`). Clients on loopback that did not come through a "
        "proxy (no X-Forwarded-For, X-Real-IP or Forwarded header) need none; without a token, "
        "nobody else is served (403).",
    )

    # SMTP submission
    smtp_auth_failure_limit: int = Field(
        10,
        description="Failed SMTP AUTH attempts per client IP (IPv6: per /64) within "
        "SMTP_AUTH_FAILURE_WINDOW before the server answers 421 and disconnects; counted for "
        "the whole deployment (in the database, shared by every process); checks of one client "
        "in flight count too, and wait rather than fail; 0 = no limit.",
    )
    smtp_auth_failure_window: int = Field(
        60, description="Seconds over which failed SMTP AUTH attempts are counted."
    )
    smtp_max_connections_per_client: int = Field(
        100,
        ge=1,
        description="Open SMTP submission connections per client IP (IPv6: per /64); one more "
        "is answered 421 and closed. High enough for an application's connection pool. With "
        "SMTP_WORKERS > 1 each session process allows its share (this divided by their number, "
        "rounded up). SMTP_TRUSTED_NETWORKS are not capped.",
    )
    smtp_auth_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds an SMTP submission session has to authenticate (AUTH) after "
        "connecting; then it is answered 421 and closed. Sessions from SMTP_TRUSTED_NETWORKS "
        "are exempt.",
    )
    smtp_greeting_delay: float = Field(
        0.0,
        ge=0,
        le=30,
        description="Seconds the submission server waits before its 220 greeting. A client "
        "that sends anything before the greeting (RFC 5321 section 3.1) is answered 554 and "
        "closed whatever this is; a short delay (e.g. 1) is what catches clients that do not "
        "wait, at that cost to every connection.",
    )
    smtp_trusted_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="IPs/CIDRs whose SMTP clients may submit without AUTH, for "
        "SMTP_TRUSTED_ACCOUNT (a local relay, the benchmark); keep empty otherwise.",
    )
    smtp_trusted_account: str = Field(
        "", description="Account id that mail from SMTP_TRUSTED_NETWORKS is submitted for."
    )

    # Bounces
    bounce_domain: str = Field(
        "", description="Domain of VERP return paths (bounce+…@); default <HOSTNAME>."
    )

    # BizMail JWT
    jwt_access_ttl_seconds: int = Field(
        900, gt=0, description="Lifetime of a BizMail JWT access token, in seconds."
    )
    jwt_refresh_ttl_seconds: int = Field(
        30 * 24 * 3600,
        gt=0,
        description="Lifetime of a BizMail refresh token, in seconds; each use rotates it.",
    )
    login_failure_limit: int = Field(
        10,
        ge=0,
        description="Failed logins at POST /api/1.0/auth/token per client IP (IPv6: per /64; "
        "behind TRUSTED_PROXIES, the forwarded address) within LOGIN_FAILURE_WINDOW before "
        "it answers 429 without checking the password; counted for the whole deployment (in "
        "the database, shared by every process); 0 = no limit.",
    )
    login_failure_window: int = Field(
        300, gt=0, description="Seconds over which failed BizMail logins are counted."
    )

    # Bulk jobs
    bulk_rate_per_second: int = Field(
        50,
        gt=0,
        description="Emails a bulk job queues per second (the runner's pace); transactional "
        "mail is never held behind a job, and no destination gets more than this from one.",
    )

    # Outbound TLS policy
    tls_policy: dict[str, str] = Field(
        default_factory=dict,
        description="TLS for direct MX delivery per recipient domain, as JSON, e.g. "
        '`{"bank.example": "verify", ".partner.example": "encrypt"}` (a leading dot: its '
        "subdomains). `may`: STARTTLS when offered (the default); `encrypt`: STARTTLS "
        "required; `verify`: STARTTLS required and the certificate must be trusted and name "
        "the MX host. A policy not met defers the mail, never sends it in clear.",
    )
    tls_ca_file: Path | None = Field(
        None,
        description="PEM file of CAs trusted for the `verify` TLS policy, besides the system's.",
    )

    @field_validator("smtp_trusted_networks", mode="before")
    @classmethod
    def _smtp_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        for item in value:
            ipaddress.ip_network(str(item).strip(), strict=False)  # fail fast on a typo
        return value

    @field_validator(
        "dns_nameservers",
        "retry_schedule_minutes",
        "trusted_proxies",
        "return_path_mx",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("POSTHORN_CONFIG", "posthorn.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @property
    def effective_database_url(self) -> str:
        """The SQLAlchemy URL, with the async driver chosen for the dialect."""
        url = self.database_url or f"sqlite:///{self.data_dir.resolve() / 'posthorn.db'}"
        if url.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+asyncpg://" + url.removeprefix(prefix)
        return url

    @property
    def effective_bounce_domain(self) -> str:
        return self.bounce_domain or self.hostname

    @property
    def effective_spf_include(self) -> str:
        return self.spf_include or f"_spf.{self.hostname}"

    @property
    def effective_return_path_mx(self) -> list[tuple[str, int]]:
        entries = self.return_path_mx or [f"{self.hostname}:10"]
        pairs: list[tuple[str, int]] = []
        for entry in entries:
            host, _, priority = entry.partition(":")
            pairs.append((host.strip().rstrip(".").lower(), int(priority or 10)))
        return pairs

    def plan(self, code: str | None) -> tuple[str, dict[str, Any]]:
        """The plan's code and settings; an unknown code falls back to the default plan."""
        chosen = code if code in self.plans else self.default_plan
        if chosen not in self.plans:
            raise ValueError(f"POSTHORN_DEFAULT_PLAN {chosen!r} is not in POSTHORN_PLANS")
        return chosen, self.plans[chosen]

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")


def load_settings(**overrides: Any) -> Settings:
    """Build the settings and make sure a server secret exists.

    With no ``SECRET_KEY`` configured, a random one is generated on first start and kept in
    ``DATA_DIR/secret.key`` (mode 0600) so that tokens and encrypted columns survive restarts.
    """
    settings = Settings(**overrides)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.secret_key:
        return settings
    key_file = settings.data_dir / SECRET_KEY_FILE
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # made by an earlier start, or by a sibling process just now
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return settings.model_copy(update={"secret_key": key_file.read_text().strip()})
