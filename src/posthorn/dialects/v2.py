"""The v2 form API (seed 004): ``/api/v2/<method>`` with the API key as ``token``.

Requests are forms (``application/x-www-form-urlencoded`` or ``multipart/form-data``; a JSON
object is read the same way). Answers are ``{"status": "OK", "result": …}`` or, with a 4xx,
``{"status": "ERROR", "error": "<text>"}``. Ids the seed shows as numbers are numbers from
``numeric_ids``. ``docs/dialects/v2.md`` records every choice made here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from posthorn.api.deps import ServicesDep, client_ip
from posthorn.api.errors import language_of, status_for
from posthorn.dialects.v2_forms import (
    Fields,
    attachments,
    form_schema,
    parse_number,
    read_fields,
    sender,
)
from posthorn.domain.addresses import parse_address
from posthorn.domain.permissions import Permission
from posthorn.domain.statuses import Status
from posthorn.errors import InvalidRequest, LimitExceeded, NotFound, PosthornError
from posthorn.messages import render
from posthorn.services.accounts import Principal
from posthorn.services.bulk import MAX_RECIPIENTS, NewJob, NewRecipient, RecipientReport
from posthorn.services.container import Services
from posthorn.services.intake import SendRequest

router = APIRouter(prefix="/api/v2", tags=["dialect: v2"])
log = logging.getLogger(__name__)

SOURCE = "v2"
MAX_FIELDS = 3 * MAX_RECIPIENTS + 100  # personal letters: email, subject, message each
REPORT_PAGE = 1000
MAX_TEMPLATE_PAGES = 100  # 10,000 templates
SCHEDULE_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S")
# Our field names → the seed's, in error messages.
FIELD_NAMES = {"from": "sender_email", "to": "email", "to[0]": "email", "html": "message"}
# Engagement events, strongest first, and the word each one shows as.
ENGAGED = (
    ("unsubscribed", "UNSUBSCRIBED"),
    ("complained", "SPAM"),
    ("clicked", "CLICK"),
    ("opened", "OPEN"),
)
DELIVERY_WORDS = {
    Status.DELIVERED: "DELIVERED",
    Status.SENT: "DELIVERED",
    Status.QUEUED: "QUEUED",
    Status.SCHEDULED: "QUEUED",
    Status.DEFERRED: "QUEUED",
}

Work = Callable[[Services, Principal, Fields], Awaitable[Any]]


# ── the envelope ────────────────────────────────────────────────────────────────────────


def _error(request: Request, exc: PosthornError) -> JSONResponse:
    language = language_of(request)
    if exc.code == "schedule_too_far":
        message = render("schedule_ahead", language, field="d_schedule", days=30)
    else:
        name = FIELD_NAMES.get(exc.field or "", exc.field)
        message = render(exc.code, language, field=name, **exc.params)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, LimitExceeded) else {}
    body = {"status": "ERROR", "error": message}
    return JSONResponse(body, status_code=status_for(exc), headers=headers)


async def _call(request: Request, svc: Services, needed: Permission, work: Work) -> JSONResponse:
    """Authenticate, authorise, then read and check the request.

    The seed carries ``token`` in the form, so the body's framing (form or JSON) is read to
    find it; its fields are checked only once the caller is known. A token in the query
    string is checked before the body is read at all; without one, a large body is parsed
    only once the token found in it by a scan is a key (``read_fields``), and the token of
    the parsed fields is then the one that counts.
    """
    checked: dict[str | None, Principal] = {}

    async def unlock(token: str | None) -> Principal:
        if token not in checked:
            checked[token] = await _authorised(request, svc, needed, token)
        return checked[token]

    try:
        queried = (request.query_params.get("token") or "").strip()
        early = await unlock(queried) if queried else None
        async with read_fields(
            request,
            max_fields=MAX_FIELDS,
            max_part_size=svc.settings.max_message_bytes,
            unlock=None if early is not None else unlock,
        ) as fields:
            token = _token(fields)
            caller = (
                early if early is not None and token in (None, queried) else await unlock(token)
            )
            result = await work(svc, caller, fields)
    except PosthornError as exc:
        return _error(request, exc)
    except Exception:
        log.exception("v2: unexpected error on %s", request.url.path)
        body = {"status": "ERROR", "error": render("internal", language_of(request))}
        return JSONResponse(body, status_code=500)
    return JSONResponse({"status": "OK"} if result is None else {"status": "OK", "result": result})


async def _authorised(
    request: Request, svc: Services, needed: Permission, token: str | None
) -> Principal:
    caller = await svc.accounts.authenticate(
        token or None, client_ip=client_ip(request, svc.settings)
    )
    caller.require(needed)
    return caller


def _token(fields: Fields) -> str | None:
    """The first ``token`` (the form's before the query string's), stripped; a file sent in
    its place is no token (an authentication failure, not a field error)."""
    for key, value in fields.pairs:
        if key == "token":
            return (value.strip() or None) if isinstance(value, str) else None
    return None


# ── translating fields ──────────────────────────────────────────────────────────────────


async def _schedule(svc: Services, caller: Principal, fields: Fields) -> datetime | None:
    """``d_schedule`` ('YYYY-MM-DD HH:MM') is wall-clock time in the account's time zone."""
    text = (fields.text("d_schedule") or "").strip()
    if not text:
        return None
    for layout in SCHEDULE_FORMATS:
        try:
            naive = datetime.strptime(text, layout)
        except ValueError:
            continue
        zone = await svc.bulk.timezone(caller.account_id)
        return naive.replace(tzinfo=zone).astimezone(UTC)
    raise InvalidRequest("schedule_format", field="d_schedule")


async def _list_id(svc: Services, caller: Principal, text: str, field: str) -> str:
    """A list by its number, or by its ``lst_`` id."""
    text = text.strip()
    if text.startswith("lst_"):
        await svc.lists.get(caller.account_id, text)
        return text
    return await svc.lists.resolve(caller.account_id, parse_number(text, field))


def _word(report: RecipientReport) -> tuple[str, str]:
    """The seed's status word for a recipient, and the error text that goes with it."""
    error = report.error or ""
    if report.status == "pending":
        return "QUEUED", ""
    if report.status == "skipped":
        unsubscribed = error == "unsubscribed" or error == "suppressed: unsubscribe"
        return ("UNSUBSCRIBED", "") if unsubscribed else ("UNDELIVERED", error)
    if report.status != "queued" or report.delivery_status is None:
        return "UNDELIVERED", error or report.status
    for event, word in ENGAGED:
        if event in report.events:
            return word, ""
    status = Status(report.delivery_status)
    if status in DELIVERY_WORDS:
        reply = (report.last_reply or "") if status is Status.DEFERRED else ""
        return DELIVERY_WORDS[status], reply
    return "UNDELIVERED", report.last_reply or str(status)


async def _reports(svc: Services, caller: Principal, job_id: str) -> list[RecipientReport]:
    """Every recipient of a job, read a thousand at a time."""
    job = await svc.bulk.get(caller.account_id, job_id)
    found: list[RecipientReport] = []
    after = 0
    for _ in range(job["totals"]["total"] // REPORT_PAGE + 1):
        page = await svc.bulk.report(caller.account_id, job_id, after=after, limit=REPORT_PAGE)
        found += page
        if len(page) < REPORT_PAGE:
            break
        after = page[-1].position
    return found


def _job(caller: Principal, fields: Fields, kind: str, message: str | None, **extra: Any) -> NewJob:
    return NewJob(
        kind=kind,
        from_=sender(fields),
        name=fields.text("name"),
        subject=fields.text("subject"),
        html=message,
        track_opens=fields.flag("track_open", default=True),
        track_clicks=fields.flag("track_click", default=True),
        source=SOURCE,
        api_key_id=caller.key_id,
        **extra,
    )


# ── methods ─────────────────────────────────────────────────────────────────────────────


async def _send_email(svc: Services, caller: Principal, fields: Fields) -> Any:
    request = SendRequest(
        account_id=caller.account_id,
        api_key_id=caller.key_id,
        source=SOURCE,
        from_=sender(fields),
        to=[fields.required("email").strip()],
        subject=fields.required("subject"),
        html=fields.required("message"),
        attachments=await attachments(fields),
        scheduled_at=await _schedule(svc, caller, fields),
        track_opens=fields.flag("track_open", default=True),
        track_clicks=fields.flag("track_click", default=True),
    )
    accepted = await svc.intake.submit(request)
    return {"email_id": await svc.bulk.number("email", accepted.id)}


async def _send_by_list(svc: Services, caller: Principal, fields: Fields) -> Any:
    list_id = await _list_id(svc, caller, fields.required("list_id"), "list_id")
    job = _job(
        caller,
        fields,
        "list",
        fields.required("message"),
        list_id=list_id,
        unsubscribe=True,
        personalize=True,
        scheduled_at=await _schedule(svc, caller, fields),
        attachments=await attachments(fields),
    )
    created = await svc.bulk.create(caller, job)
    return {"message_id": created["numeric_id"], "count_emails": created["totals"]["pending"]}


async def _delivery_list(svc: Services, caller: Principal, fields: Fields) -> Any:
    """A mailing's recipients (a sendEmailByList or sendBulkEmail number), or one letter's."""
    found = await svc.bulk.resolve(parse_number(fields.required("message_id"), "message_id"))
    kind, ref = found or ("", "")
    if kind == "bulk":
        reports = await _reports(svc, caller, ref)
    elif kind == "email":
        reports = await svc.bulk.email_report(caller.account_id, ref)
        if not reports:
            raise NotFound(resource="message")
    else:
        raise NotFound(resource="message")
    result = []
    for report in reports:
        word, error = _word(report)
        number = str(report.number) if report.number else ""
        result.append({"email_id": number, "email": report.email, "status": word, "error": error})
    return result


async def _send_bulk(svc: Services, caller: Principal, fields: Fields) -> Any:
    kind = (fields.text("message_type") or "bulk").strip().lower()
    if kind not in ("bulk", "personal"):
        raise InvalidRequest("message_type_invalid", field="message_type")
    items = fields.array("delivery_list", max_items=MAX_RECIPIENTS)
    if not items:
        raise InvalidRequest("field_required", field="delivery_list")
    recipients = []
    for item in items:
        if isinstance(item, dict):
            email, subject, body = (str(item.get(k) or "") for k in ("email", "subject", "message"))
            recipients.append(NewRecipient(email, subject=subject or None, html=body or None))
        else:
            recipients.append(NewRecipient(str(item)))
    message = fields.text("message") if kind == "personal" else fields.required("message")
    job = _job(
        caller,
        fields,
        kind,
        message,
        recipients=recipients,
        personalize=False,
        scheduled_at=await _schedule(svc, caller, fields),
        attachments=await attachments(fields),
    )
    created = await svc.bulk.create(caller, job)
    return {"uuid": str(created["id"]).removeprefix("blk_")}


async def _status_bulk(svc: Services, caller: Principal, fields: Fields) -> Any:
    uuid = fields.required("uuid").strip()
    job_id = uuid if uuid.startswith("blk_") else "blk_" + uuid
    job = await svc.bulk.get(caller.account_id, job_id)
    success, errors = [], []
    for report in await _reports(svc, caller, job_id):
        if report.status in ("invalid", "failed"):
            errors.append({"email": report.email, "error": report.error or report.status})
            continue
        word, error = _word(report)
        number = str(report.number) if report.number else None
        success.append(
            {"email_id": number, "recipient": report.email, "status": word, "error": error or None}
        )
    sender = parse_address(job["from"])
    return [
        {
            "message_id": str(job["numeric_id"]),
            "name": job["name"],
            "sender_email": sender.email,
            "sender_name": sender.name,
            "success": success,
            "errors": errors,
        }
    ]


async def _list_ids(svc: Services, caller: Principal, fields: Fields) -> list[str] | None:
    text = (fields.text("list_ids") or "").strip()
    if not text:
        return None
    parts = [part.strip() for part in text.split(",") if part.strip()]
    for part in parts:  # the whole field is checked before any list is looked up
        if not part.startswith("lst_"):
            parse_number(part, "list_ids")
    return [await _list_id(svc, caller, part, "list_ids") for part in parts]


async def _unsubscribe(svc: Services, caller: Principal, fields: Fields) -> Any:
    email = fields.required("email")
    await svc.lists.set_subscription(
        caller,
        email,
        list_ids=await _list_ids(svc, caller, fields),
        subscribed=False,
        reason=fields.text("reason"),
    )


async def _subscribe(svc: Services, caller: Principal, fields: Fields) -> Any:
    email = fields.required("email")
    await svc.lists.set_subscription(
        caller, email, list_ids=await _list_ids(svc, caller, fields), subscribed=True
    )


async def _templates(svc: Services, caller: Principal, fields: Fields) -> Any:
    rows = []
    for page in range(1, MAX_TEMPLATE_PAGES + 1):
        batch, total = await svc.templates.page(caller.account_id, page=page, per_page=100)
        rows += batch
        if not batch or len(rows) >= total:
            break
    # Oldest first, so that numbers handed out now follow the order templates were made in.
    numbers = await svc.bulk.numbers("template", [row.id for row in reversed(rows)])
    listed = [{"id": numbers[row.id], "title": row.name} for row in rows]
    return sorted(listed, key=lambda item: item["id"])


_SENDER = ("sender_email*", "sender_name", "subject*", "message*")
_TRACKING = ("d_schedule", "track_open", "track_click")
# name → (permission, handler, summary, form fields; "*" marks the required ones)
METHODS: dict[str, tuple[Permission, Work, str, tuple[str, ...]]] = {
    "sendEmail": (
        Permission.SENDING_ACCESS,
        _send_email,
        "Send one letter",
        ("email*", *_SENDER, "attachment", *_TRACKING),
    ),
    "sendEmailByList": (
        Permission.SENDING_ACCESS,
        _send_by_list,
        "Send a letter to a mailing list",
        ("list_id*", "name", *_SENDER, "attachment", *_TRACKING),
    ),
    "getEmailDeliveryList": (
        Permission.READ_ONLY,
        _delivery_list,
        "Recipients of a mailing (or of one letter) with delivery statuses",
        ("message_id*",),
    ),
    "sendBulkEmail": (
        Permission.SENDING_ACCESS,
        _send_bulk,
        "One letter to many addresses, or personal letters",
        ("name", "message_type", *_SENDER, "delivery_list*", *_TRACKING),
    ),
    "statusBulkEmail": (
        Permission.READ_ONLY,
        _status_bulk,
        "Statuses and errors of a sendBulkEmail mailing",
        ("uuid*",),
    ),
    "unsubscribeEmail": (
        Permission.SENDING_ACCESS,
        _unsubscribe,
        "Unsubscribe an address from mailing lists",
        ("email*", "list_ids", "reason"),
    ),
    "subscribeEmail": (
        Permission.SENDING_ACCESS,
        _subscribe,
        "Lift an address's unsubscription",
        ("email*", "list_ids"),
    ),
    "getEmailTemplates": (Permission.READ_ONLY, _templates, "The account's templates", ()),
}


def _route(needed: Permission, work: Work) -> Callable[..., Awaitable[JSONResponse]]:
    async def endpoint(request: Request, svc: ServicesDep) -> JSONResponse:
        return await _call(request, svc, needed, work)

    return endpoint


for _name, (_needed, _work, _summary, _form) in METHODS.items():
    router.add_api_route(
        f"/{_name}",
        _route(_needed, _work),
        methods=["POST"],
        summary=_summary,
        name=_name,
        openapi_extra=form_schema(_form),
    )
# The seed passes getEmailTemplates' token in the query string; a GET is accepted too.
router.add_api_route(
    "/getEmailTemplates",
    _route(Permission.READ_ONLY, _templates),
    methods=["GET"],
    summary="The account's templates (token in the query string)",
    name="getEmailTemplatesGet",
)


@router.api_route("/{method}", methods=["GET", "POST"], include_in_schema=False)
async def unknown_method(method: str, request: Request) -> JSONResponse:
    error = NotFound("method_unknown", method=method[:60])
    return _error(request, error)
