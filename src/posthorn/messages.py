"""User-facing messages in English and Vietnamese, keyed by a stable code.

The native API answers in the language of the request's ``Content-Language`` header
(``vi`` or ``en``, English by default), as the "Email Transactional REST API" does. Messages
are ``str.format`` templates; ``{field}`` is the offending field's name.
"""

from __future__ import annotations

from typing import Any

LANGUAGES = ("en", "vi")

CATALOG: dict[str, dict[str, str]] = {
    "error": {"en": "Something went wrong", "vi": "Đã xảy ra lỗi"},
    "invalid": {"en": "{field}: invalid value", "vi": "{field}: giá trị không hợp lệ"},
    "malformed_json": {
        "en": "The request body is not valid JSON",
        "vi": "Body của request không phải JSON hợp lệ",
    },
    "field_required": {"en": "{field}: field required", "vi": "{field}: trường bắt buộc"},
    "field_type": {
        "en": "{field}: {reason}",
        "vi": "{field}: sai kiểu dữ liệu ({reason})",
    },
    "invalid_address": {
        "en": "{field}: '{value}' is not a valid email address",
        "vi": "{field}: '{value}' không phải địa chỉ email hợp lệ",
    },
    "body_required": {
        "en": "At least one of html or text is required",
        "vi": "Cần ít nhất một trong hai trường html hoặc text",
    },
    "recipients_required": {
        "en": "to: at least one recipient is required",
        "vi": "to: cần ít nhất một người nhận",
    },
    "too_many_recipients": {
        "en": "Too many recipients: {count} in to, cc and bcc (limit {limit})",
        "vi": "Quá nhiều người nhận: {count} trong to, cc và bcc (giới hạn {limit})",
    },
    "header_forbidden": {
        "en": "headers: '{name}' cannot be set as a custom header",
        "vi": "headers: không được đặt '{name}' làm header tùy chỉnh",
    },
    "header_invalid": {
        "en": "headers: '{name}' has an invalid name or value (CR, LF, NUL or non-ASCII name)",
        "vi": (
            "headers: '{name}' có tên hoặc giá trị không hợp lệ (CR, LF, NUL hoặc tên không ASCII)"
        ),
    },
    "attachment_invalid": {
        "en": "attachments[{index}].content is not valid base64",
        "vi": "attachments[{index}].content không phải base64 hợp lệ",
    },
    "subject_invalid": {
        "en": "subject: must not contain CR, LF or NUL",
        "vi": "subject: không được chứa CR, LF hoặc NUL",
    },
    "too_large": {
        "en": "The request is larger than the limit of {limit} bytes",
        "vi": "Request vượt quá giới hạn {limit} byte",
    },
    "auth_missing": {"en": "Missing API key", "vi": "Thiếu API key"},
    "auth_invalid": {
        "en": "Invalid, expired or revoked API key",
        "vi": "API key không hợp lệ, đã hết hạn hoặc đã bị thu hồi",
    },
    "permission_denied": {
        "en": "This API key's permission ({permission}) does not allow this action",
        "vi": "Quyền của API key ({permission}) không cho phép thao tác này",
    },
    "ip_not_allowed": {
        "en": "Requests from {ip} are not allowed for this API key",
        "vi": "API key này không cho phép request từ {ip}",
    },
    "invalid_ip": {
        "en": "{field}: '{value}' is not an IP address or CIDR network",
        "vi": "{field}: '{value}' không phải địa chỉ IP hoặc dải CIDR",
    },
    "expiry_choice": {
        "en": "expires_in_days: must be one of 7, 30, 60, 90, 180, 365",
        "vi": "expires_in_days: phải là một trong 7, 30, 60, 90, 180, 365",
    },
    "domain_invalid": {
        "en": "domain: not a domain that can send mail ({reason})",
        "vi": "domain: tên miền không hợp lệ để gửi email ({reason})",
    },
    "domain_taken": {
        "en": "The domain {domain} is already registered",
        "vi": "Tên miền {domain} đã được đăng ký",
    },
    "rotation_pending": {
        "en": "A DKIM key rotation is already waiting for its DNS record to verify",
        "vi": "Đang có một lần xoay khóa DKIM chờ bản ghi DNS được xác minh",
    },
    "plan_unknown": {
        "en": "{field}: '{value}' is not a known plan",
        "vi": "{field}: '{value}' không phải gói dịch vụ hợp lệ",
    },
    "domain_not_verified": {
        "en": "The domain {domain} is not a verified domain of this account",
        "vi": "Tên miền {domain} chưa được xác minh trong tài khoản này",
    },
    "quota_exceeded": {
        "en": "Quota exceeded: the {label} ({limit}) is reached; retry in {retry_after} s",
        "vi": "Vượt quá hạn mức: đã đạt {label} ({limit}); thử lại sau {retry_after} giây",
    },
    "password_length": {
        "en": "password: must be at least {minimum} characters",
        "vi": "password: phải có ít nhất {minimum} ký tự",
    },
    "sender_domain_mismatch": {
        "en": "account: the address must be on the domain {domain}",
        "vi": "account: địa chỉ phải thuộc tên miền {domain}",
    },
    "sender_taken": {
        "en": "The sender {address} already exists",
        "vi": "Sender {address} đã tồn tại",
    },
    "from_missing": {
        "en": "The message has no From header",
        "vi": "Thư không có header From",
    },
    "schedule_invalid": {
        "en": "scheduled_at: an ISO-8601 time with a time zone is required",
        "vi": "scheduled_at: cần thời gian ISO-8601 có múi giờ",
    },
    "schedule_too_far": {
        "en": "scheduled_at: at most {days} days ahead",
        "vi": "scheduled_at: tối đa {days} ngày tới",
    },
    "metadata_too_large": {
        "en": "metadata: at most 50 keys and {limit} bytes",
        "vi": "metadata: tối đa 50 khóa và {limit} byte",
    },
    "idempotency_mismatch": {
        "en": "This Idempotency-Key was already used with a different request",
        "vi": "Idempotency-Key này đã được dùng cho một request khác",
    },
    "not_cancellable": {
        "en": "The email can no longer be changed: it is already {status}",
        "vi": "Không thể thay đổi email: email đã ở trạng thái {status}",
    },
    "not_found": {"en": "{resource} not found", "vi": "Không tìm thấy {resource}"},
    "conflict": {"en": "Conflict", "vi": "Xung đột dữ liệu"},
    "limit_exceeded": {"en": "Limit exceeded", "vi": "Vượt quá giới hạn"},
    "internal": {"en": "Internal server error", "vi": "Lỗi máy chủ nội bộ"},
    "invalid_filter": {
        "en": "{field}: '{value}' is not a valid filter value",
        "vi": "{field}: '{value}' không phải giá trị lọc hợp lệ",
    },
    "webhook_url_invalid": {
        "en": "{field}: not a usable webhook URL: {reason}",
        "vi": "{field}: URL webhook không dùng được: {reason}",
    },
    "webhook_url_unresolvable": {
        "en": "{field}: the host {host} does not resolve to any address",
        "vi": "{field}: tên máy {host} không phân giải ra địa chỉ nào",
    },
    "webhook_url_refused": {
        "en": "{field}: {host} resolves to {address}, a {problem} address; "
        "webhooks only go to public addresses",
        "vi": "{field}: {host} trỏ tới {address}, một địa chỉ {problem}; "
        "webhook chỉ được gửi tới địa chỉ công khai",
    },
    "webhook_event_unknown": {
        "en": "events: '{value}' is not a webhook event",
        "vi": "events: '{value}' không phải sự kiện webhook",
    },
    "webhook_disabled": {
        "en": "The webhook is disabled; enable it first",
        "vi": "Webhook đang bị tắt; hãy bật lại trước",
    },
}


def render(code: str, language: str = "en", **params: Any) -> str:
    """The message for ``code`` in ``language``, English when either is unknown."""
    entry = CATALOG.get(code) or CATALOG["error"]
    template = entry.get(language) or entry["en"]
    try:
        return template.format(**params)
    except (KeyError, IndexError):
        return entry["en"]


def pick_language(header: str | None) -> str:
    """Choose ``vi`` or ``en`` from a Content-Language / Accept-Language style header."""
    if not header:
        return "en"
    for part in header.split(","):
        tag = part.split(";")[0].strip().lower()
        primary = tag.split("-")[0]
        if primary in LANGUAGES:
            return primary
    return "en"
