"""The schema, as SQLAlchemy Core tables. Alembic migrations in ``migrations/`` create it.

Times are stored as timezone-aware UTC (``DateTime(timezone=True)``); SQLite keeps them as
ISO text, PostgreSQL as ``timestamptz``. Ids of things users see are UUID strings; rows that
only the system addresses (deliveries, events) use integer keys.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

# SQLite only auto-increments INTEGER PRIMARY KEY, so big keys are plain INTEGER there.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


accounts = Table(
    "accounts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("default_sender", String(320)),  # used when a dialect's request names no sender
    Column("timezone", String(64), nullable=False, default="UTC", server_default="UTC"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    # SHA-256 of the whole key: keys carry 256 bits of entropy, so a fast hash is enough
    # (a slow password hash only matters for guessable secrets).
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("display", String(40), nullable=False),
    Column("permission", String(20), nullable=False),
    Column("ip_allowlist", JSON),  # list of IPs/CIDRs; NULL = any address
    Column("expires_at", UtcDateTime()),
    Column("revoked_at", UtcDateTime()),
    Column("last_used_at", UtcDateTime()),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index("ix_api_keys_account", "account_id", "created_at"),
)

emails = Table(
    "emails",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("api_key_id", String(36)),
    Column("source", String(10), nullable=False),
    Column("message_id", String(255), nullable=False),
    Column("from_header", Text, nullable=False),
    Column("from_email", String(320), nullable=False),
    Column("to_addrs", JSON, nullable=False),
    Column("cc_addrs", JSON, nullable=False),
    Column("bcc_addrs", JSON, nullable=False),
    Column("reply_to", Text),
    Column("subject", Text, nullable=False),
    Column("html", Text),
    Column("text", Text),
    Column("headers", JSON, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("attachments", JSON, nullable=False),
    Column("status", String(20), nullable=False),
    Column("size", Integer, nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("scheduled_at", UtcDateTime()),
    Column("track_opens", Integer, nullable=False, default=0, server_default="0"),
    Column("track_clicks", Integer, nullable=False, default=0, server_default="0"),
    Column("metadata", JSON),  # the client's own key/values, echoed in webhooks
    Column("template_id", String(40)),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index("ix_emails_account_created", "account_id", "created_at"),
    Index("ix_emails_account_status", "account_id", "status", "created_at"),
    Index("ix_emails_message_id", "message_id"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("email_id", String(36), ForeignKey("emails.id", ondelete="CASCADE"), nullable=False),
    Column("account_id", String(36), nullable=False),
    Column("recipient", String(320), nullable=False),
    Column("kind", String(3), nullable=False),  # to | cc | bcc
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    # The queue: a delivery is due when next_attempt_at <= now; NULL means finished. A claim
    # pushes next_attempt_at forward by the lease and stamps lease_token, so a crashed
    # worker's deliveries simply come due again when the lease runs out.
    Column("next_attempt_at", UtcDateTime()),
    Column("lease_token", String(36)),
    Column("last_code", Integer),
    Column("last_reply", Text),
    Column("remote_host", String(255)),
    Column("delivered_at", UtcDateTime()),
    # The message as this recipient gets it, when it differs from the email's (tracking
    # links and unsubscribe URLs are per recipient); NULL = the email's raw message. Written
    # by earlier versions only: mail queued since has a plan in ``personal`` instead.
    Column("raw", LargeBinary),
    # How this recipient's copy differs from the email's message (JSON, see
    # services/personal_copies.py): the worker makes the copy at send time. NULL = no copy.
    Column("personal", Text),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index("ix_deliveries_due", "next_attempt_at"),
    Index("ix_deliveries_email", "email_id"),
    # The queue by status, for /metrics: holds only unfinished deliveries, so counting them
    # is an index-only scan as long as the backlog, however long the history. SQLite reads
    # the predicate's column from the index too, or it visits each row to check it.
    Index(
        "ix_deliveries_queue",
        "status",
        "next_attempt_at",
        sqlite_where=text("next_attempt_at IS NOT NULL"),
        postgresql_where=text("next_attempt_at IS NOT NULL"),
    ),
)

# Events are the history that logs, statistics and webhooks read. The sender and source of
# the email are copied in so that the log filters never need a join over millions of rows.
events = Table(
    "events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("account_id", String(36), nullable=False),
    Column("email_id", String(36), nullable=False),
    Column("delivery_id", BigId),
    Column("type", String(30), nullable=False),
    Column("recipient", String(320)),
    Column("sender", String(320)),
    Column("source", String(10)),
    Column("data", JSON, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_events_account_created", "account_id", "created_at"),
    Index("ix_events_email", "email_id", "id"),
    Index("ix_events_account_type", "account_id", "type", "created_at"),
    Index("ix_events_account_recipient", "account_id", "recipient", "created_at"),
    Index("ix_events_account_sender", "account_id", "sender", "created_at"),
)

domains = Table(
    "domains",
    metadata,
    Column("id", String(40), primary_key=True),  # dom_…
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(253), nullable=False),  # A-label, lower case
    Column("status", String(20), nullable=False),  # pending | verified
    Column("records", JSON, nullable=False),  # the DNS records to publish, with live state
    Column("daily_limit", Integer),  # NULL = the plan's
    Column("hourly_limit", Integer),
    Column("monthly_limit", Integer),
    Column("plan", String(40)),
    Column("ed25519", Integer, nullable=False, default=0),  # also sign with ed25519-sha256
    # What a send that leaves tracking unsaid does, and whether every email from the domain
    # gets the one-click unsubscribe (domain/send_defaults.py).
    Column("track_opens", Integer, nullable=False, default=0, server_default="0"),
    Column("track_clicks", Integer, nullable=False, default=0, server_default="0"),
    Column("force_unsubscribe", Integer, nullable=False, default=0, server_default="0"),
    Column("verified_at", UtcDateTime()),
    Column("checked_at", UtcDateTime()),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    # An account claims a name once; several accounts may claim it while it is pending, and
    # the first to verify it owns it (services/domains.py).
    Index("ix_domains_account", "account_id", "name", unique=True),
    Index(
        "uq_domains_verified_name",
        "name",
        unique=True,
        sqlite_where=text("status = 'verified'"),
        postgresql_where=text("status = 'verified'"),
    ),
)

dkim_keys = Table(
    "dkim_keys",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("domain_id", String(40), ForeignKey("domains.id", ondelete="CASCADE"), nullable=False),
    Column("selector", String(63), nullable=False),
    Column("algorithm", String(20), nullable=False),  # rsa-sha256 | ed25519-sha256
    Column("private_key", Text, nullable=False),  # sealed with the server secret (crypto.seal)
    Column("public_key", Text, nullable=False),  # base64, the p= value
    # active: signs mail; pending: published after a rotation, signs once its record
    # verifies; retired: replaced, kept for the record.
    Column("state", String(10), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_dkim_keys_domain", "domain_id", "state"),
)

senders = Table(
    "senders",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("domain_id", String(40), ForeignKey("domains.id", ondelete="CASCADE"), nullable=False),
    Column("address", String(320), nullable=False, unique=True),  # the SMTP user name
    Column("password_hash", Text, nullable=False),  # argon2id
    Column("active", Integer, nullable=False, default=1),
    Column("daily_limit", Integer, nullable=False),
    Column("hourly_limit", Integer, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index("ix_senders_account", "account_id", "created_at"),
)

# Fixed-window counters for quotas: scope "dom:<id>" or "snd:<id>", window "h2026112318",
# "d20261123" or "m202611". Intake increments them in the transaction that queues the mail.
usage_counters = Table(
    "usage_counters",
    metadata,
    Column("scope", String(60), primary_key=True),
    Column("window", String(12), primary_key=True),
    Column("count", BigInteger, nullable=False),
)


suppressions = Table(
    "suppressions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("address", String(320), nullable=False),  # lower case
    Column("reason", String(20), nullable=False),  # bounce | complaint | unsubscribe | manual
    Column("scope", String(60), nullable=False, default=""),  # "" = the whole account
    Column("detail", Text),
    Column("email_id", String(36)),  # the email that caused it, when there is one
    Column("created_at", UtcDateTime(), nullable=False),
    UniqueConstraint("account_id", "address", "scope", name="uq_suppressions_address"),
    Index("ix_suppressions_account", "account_id", "created_at"),
)

relays = Table(
    "relays",
    metadata,
    Column("id", String(40), primary_key=True),  # rel_…
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("host", String(255), nullable=False),
    Column("port", Integer, nullable=False),
    Column("tls", String(10), nullable=False),  # starttls | implicit | none
    Column("username", String(255)),
    Column("password", Text),  # sealed with the server secret
    Column("is_default", Integer, nullable=False, default=0),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index("ix_relays_account", "account_id", "is_default"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("account_id", String(36), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("response", JSON, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_idempotency_created", "created_at"),
)

templates = Table(
    "templates",
    metadata,
    Column("id", String(40), primary_key=True),  # tpl_…
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("subject", Text, nullable=False),
    Column("html", Text),
    Column("text", Text),
    Column("variables", JSON, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index("ix_templates_account", "account_id", "created_at"),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", String(40), primary_key=True),  # wh_…
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("url", Text, nullable=False),
    Column("events", JSON, nullable=False),  # event types; [] = all
    Column("enabled", Integer, nullable=False, default=1),
    Column("secret", Text, nullable=False),  # sealed whsec_… (signing needs the plain secret)
    Column("previous_secret", Text),  # sealed; also signs for a while after a rotation
    Column("previous_secret_until", UtcDateTime()),
    Column("disabled_reason", Text),
    Column("failing_since", UtcDateTime()),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index("ix_webhooks_account", "account_id"),
)

# The webhook outbox: one row per (event, endpoint), written in the transaction that writes the
# event; the dispatcher claims due rows with a lease, like the delivery queue.
webhook_messages = Table(
    "webhook_messages",
    metadata,
    Column("id", String(40), primary_key=True),  # msg_…: the webhook-id header, same on retries
    Column("webhook_id", String(40), ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("account_id", String(36), nullable=False),
    Column("event_type", String(40), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("status", String(20), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime()),
    Column("lease_token", String(36)),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index("ix_webhook_messages_due", "next_attempt_at"),
    Index("ix_webhook_messages_webhook", "webhook_id", "created_at"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "message_id",
        String(40),
        ForeignKey("webhook_messages.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("webhook_id", String(40), nullable=False),
    Column("status_code", Integer),
    Column("latency_ms", Integer),
    Column("response_excerpt", Text),
    Column("error", Text),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_webhook_attempts_webhook", "webhook_id", "created_at"),
)


# Dashboard users: people who log in (the dashboard, BizMail's JWT auth, SMTP portal logins).
users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("username", String(200), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),  # argon2id
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# Refresh tokens rotate; re-using a spent one revokes its whole family (RFC 6819 §5.2.2.3).
refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("family", String(64), nullable=False),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("used_at", UtcDateTime()),
    Column("revoked_at", UtcDateTime()),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_refresh_tokens_family", "family"),
)

# A BillionMail "API": a send configuration bound to its own key.
send_configs = Table(
    "send_configs",
    metadata,
    Column("id", String(40), primary_key=True),  # cfg_…
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("display", String(40), nullable=False),
    Column("template_id", String(40)),
    Column("subject", Text),
    Column("addresser", String(320)),
    Column("ip_allowlist", JSON),
    Column("track_opens", Integer, nullable=False, default=0),
    Column("track_clicks", Integer, nullable=False, default=0),
    Column("unsubscribe", Integer, nullable=False, default=0),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index("ix_send_configs_account", "account_id"),
)

# Numeric ids for the APIs that show numbers (the v2 form API): one sequence for everything.
numeric_ids = Table(
    "numeric_ids",
    metadata,
    Column("num_id", BigId, primary_key=True, autoincrement=True),
    Column("kind", String(20), nullable=False),  # email | list | bulk
    Column("ref_id", String(40), nullable=False),
    UniqueConstraint("kind", "ref_id", name="uq_numeric_ids_ref"),
)

lists = Table(
    "lists",
    metadata,
    Column("id", String(40), primary_key=True),  # lst_…
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index("ix_lists_account", "account_id", "created_at"),
)

contacts = Table(
    "contacts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("list_id", String(40), ForeignKey("lists.id", ondelete="CASCADE"), nullable=False),
    Column("account_id", String(36), nullable=False),
    Column("email", String(320), nullable=False),  # lower case
    Column("variables", JSON, nullable=False),
    Column("status", String(20), nullable=False),  # subscribed | unsubscribed
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    UniqueConstraint("list_id", "email", name="uq_contacts_list_email"),
    Index("ix_contacts_account_email", "account_id", "email"),
)

bulk_jobs = Table(
    "bulk_jobs",
    metadata,
    Column("id", String(40), primary_key=True),  # blk_… (the v2 API's uuid)
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("kind", String(20), nullable=False),  # bulk | personal | list
    Column("status", String(20), nullable=False),  # queued | running | done | cancelled
    Column("params", JSON, nullable=False),  # sender, subject, body, tracking, template…
    Column("list_id", String(40)),
    Column("total", Integer, nullable=False, default=0),
    Column("processed", Integer, nullable=False, default=0),
    Column("next_run_at", UtcDateTime()),  # when the pacer takes the job up next
    Column("lease_token", String(36)),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index("ix_bulk_jobs_due", "next_run_at"),
    Index("ix_bulk_jobs_account", "account_id", "created_at"),
)

bulk_recipients = Table(
    "bulk_recipients",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", String(40), ForeignKey("bulk_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("email", String(320), nullable=False),
    Column("variables", JSON),  # per-recipient template data, or subject/message (personal)
    Column("status", String(20), nullable=False),  # pending | queued | skipped | invalid | failed
    Column("error", Text),
    Column("email_id", String(36)),
    Index("ix_bulk_recipients_job", "job_id", "status", "position"),
)

# Failed logins per client network (an IPv4 address or an IPv6 /64) and time bucket, shared by
# every process of a deployment (domain/throttle.py). ``scope`` names the login: smtp | bizmail.
login_failures = Table(
    "login_failures",
    metadata,
    Column("scope", String(16), primary_key=True),
    Column("client", String(64), primary_key=True),
    Column("bucket", BigInteger, primary_key=True),  # start of the bucket, Unix seconds
    Column("failures", Integer, nullable=False),
    Index("ix_login_failures_bucket", "scope", "bucket"),
)


def utcnow() -> datetime:
    return datetime.now(UTC)
