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
    "message_malformed": {
        "en": "message: malformed header ({detail})",
        "vi": "message: phần header không hợp lệ ({detail})",
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
    "domain_verified_elsewhere": {
        "en": (
            "The domain {domain} is verified by another account; this claim stays pending "
            "until that account's DNS records are gone and yours are published"
        ),
        "vi": (
            "Tên miền {domain} đã được một tài khoản khác xác minh; yêu cầu này vẫn chờ "
            "cho đến khi bản ghi DNS của tài khoản đó bị gỡ và bản ghi của bạn được công bố"
        ),
    },
    "suppression_complaint": {
        "en": (
            "{address} complained about your mail (reported it as spam); mailing it again "
            "harms your sending reputation. To lift the suppression anyway, repeat the "
            "request with force=true"
        ),
        "vi": (
            "{address} đã khiếu nại thư của bạn (báo là thư rác); gửi lại sẽ ảnh hưởng uy tín "
            "gửi thư của bạn. Để vẫn gỡ chặn, hãy gửi lại yêu cầu với force=true"
        ),
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
    "login_invalid": {
        "en": "Invalid username or password",
        "vi": "Tên đăng nhập hoặc mật khẩu không đúng",
    },
    "token_missing": {
        "en": "Missing access token (Authorization: Bearer <token>)",
        "vi": "Thiếu access token (Authorization: Bearer <token>)",
    },
    "token_invalid": {
        "en": "Invalid, expired or revoked access token",
        "vi": "Access token không hợp lệ, đã hết hạn hoặc đã bị thu hồi",
    },
    "refresh_invalid": {
        "en": "Invalid, expired, revoked or already used refresh token",
        "vi": "Refresh token không hợp lệ, đã hết hạn, đã bị thu hồi hoặc đã được sử dụng",
    },
    "username_invalid": {
        "en": "username: 1 to {limit} characters, letters, digits and . _ @ + - "
        "(starting with a letter or digit); 'apikey' is reserved",
        "vi": "username: từ 1 đến {limit} ký tự gồm chữ, số và . _ @ + - "
        "(bắt đầu bằng chữ hoặc số); 'apikey' là tên dành riêng",
    },
    "login_throttled": {
        "en": "Too many failed logins from your network; try again in {retry_after} s",
        "vi": "Quá nhiều lần đăng nhập thất bại từ mạng của bạn; thử lại sau {retry_after} giây",
    },
    "username_taken": {
        "en": "The username {username} is already taken",
        "vi": "Tên đăng nhập {username} đã được sử dụng",
    },
    "form_required": {
        "en": "The request body must be multipart/form-data",
        "vi": "Body của request phải là multipart/form-data",
    },
    "form_invalid": {
        "en": "The form data cannot be read: {reason}",
        "vi": "Không đọc được dữ liệu form: {reason}",
    },
    "flag_invalid": {
        "en": "{field}: must be 1, 0, true or false",
        "vi": "{field}: phải là 1, 0, true hoặc false",
    },
    "file_required": {
        "en": "{field}: must be a file upload",
        "vi": "{field}: phải là một file tải lên",
    },
    "content_type_invalid": {
        "en": "{field}: '{value}' is not a valid content type",
        "vi": "{field}: '{value}' không phải content type hợp lệ",
    },
    "text_invalid": {
        "en": "{field}: the file is not UTF-8 text",
        "vi": "{field}: file không phải văn bản UTF-8",
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
    "timezone_unknown": {
        "en": "{field}: '{value}' is not an IANA time zone name (e.g. UTC, Europe/Paris, "
        "Asia/Ho_Chi_Minh)",
        "vi": "{field}: '{value}' không phải tên múi giờ IANA (ví dụ UTC, Europe/Paris, "
        "Asia/Ho_Chi_Minh)",
    },
    "default_sender_domain": {
        "en": "{field}: {domain} is not a domain of this account; add it with POST /v1/domains",
        "vi": "{field}: {domain} không phải tên miền của tài khoản này; hãy thêm bằng "
        "POST /v1/domains",
    },
    "value_too_long": {
        "en": "{field}: at most {limit} characters",
        "vi": "{field}: tối đa {limit} ký tự",
    },
    "not_found": {"en": "{resource} not found", "vi": "Không tìm thấy {resource}"},
    "conflict": {"en": "Conflict", "vi": "Xung đột dữ liệu"},
    "limit_exceeded": {"en": "Limit exceeded", "vi": "Vượt quá giới hạn"},
    "internal": {"en": "Internal server error", "vi": "Lỗi máy chủ nội bộ"},
    "no_default_sender": {
        "en": "{field}: no sender given, and the account has neither a default sender nor a "
        "sender to use instead",
        "vi": "{field}: không có người gửi, và tài khoản không có người gửi mặc định hay "
        "sender nào để dùng thay",
    },
    "no_sending_provider": {
        "en": "Nothing can send from {domain}: it is not a verified domain of this account "
        "and no default relay is configured",
        "vi": "Không thể gửi từ {domain}: tên miền chưa được xác minh trong tài khoản này "
        "và chưa cấu hình relay mặc định",
    },
    "template_unknown": {
        "en": "{field}: there is no template '{value}' in this account",
        "vi": "{field}: không có template '{value}' trong tài khoản này",
    },
    "batch_too_large": {
        "en": "{field}: at most {limit} items, not {count}",
        "vi": "{field}: tối đa {limit} phần tử, không phải {count}",
    },
    "batch_empty": {
        "en": "{field}: at least one item is required",
        "vi": "{field}: cần ít nhất một phần tử",
    },
    "recipient_suppressed": {
        "en": "{value} is on the suppression list: nothing was sent",
        "vi": "{value} nằm trong danh sách chặn gửi: không có thư nào được gửi",
    },
    "invalid_filter": {
        "en": "{field}: '{value}' is not a valid filter value",
        "vi": "{field}: '{value}' không phải giá trị lọc hợp lệ",
    },
    "template_syntax": {
        "en": "{field}: template syntax error at line {line}, column {column}: {reason}",
        "vi": "{field}: lỗi cú pháp template tại dòng {line}, cột {column}: {reason}",
    },
    "template_syntax_line": {
        "en": "{field}: template syntax error at line {line} (column unknown): {reason}",
        "vi": "{field}: lỗi cú pháp template tại dòng {line} (không rõ cột): {reason}",
    },
    "template_syntax_general": {
        "en": "{field}: template syntax error: {reason}",
        "vi": "{field}: lỗi cú pháp template: {reason}",
    },
    "template_variable_missing": {
        "en": "data: the template variable '{name}' is missing (used in {part}: {reason})",
        "vi": "data: thiếu biến template '{name}' (dùng trong {part}: {reason})",
    },
    "template_unsafe": {
        "en": "{field}: the template was refused by the sandbox: {reason}",
        "vi": "{field}: template bị sandbox từ chối: {reason}",
    },
    "template_time_limit": {
        "en": "{field}: rendering took longer than {seconds} s and was stopped",
        "vi": "{field}: render template quá {seconds} giây nên đã bị dừng",
    },
    "template_size_limit": {
        "en": "{field}: rendering stopped at a size limit: {reason}",
        "vi": "{field}: render template bị dừng vì vượt giới hạn kích thước: {reason}",
    },
    "template_render_failed": {
        "en": "{field}: the template failed to render: {reason}",
        "vi": "{field}: không render được template: {reason}",
    },
    "template_too_large": {
        "en": "{field}: a template source may be at most {limit} bytes",
        "vi": "{field}: mã nguồn template tối đa {limit} byte",
    },
    "template_parse_limit": {
        "en": "{field}: the template was not parsed: {reason}",
        "vi": "{field}: template không được phân tích: {reason}",
    },
    "template_too_long": {
        "en": "{field}: at most {limit} characters",
        "vi": "{field}: tối đa {limit} ký tự",
    },
    "stats_interval": {
        "en": "interval: must be hour or day, not '{value}'",
        "vi": "interval: phải là hour hoặc day, không phải '{value}'",
    },
    "stats_range_order": {
        "en": "from: must be before to",
        "vi": "from: phải trước to",
    },
    "stats_range_too_long": {
        "en": "from, to: the range is {days} days; at most {limit} days",
        "vi": "from, to: khoảng thời gian là {days} ngày; tối đa {limit} ngày",
    },
    "stats_too_many_buckets": {
        "en": "interval: {count} buckets of one {interval}; at most {limit} "
        "(shorten the range or use interval=day)",
        "vi": "interval: {count} khoảng một {interval}; tối đa {limit} "
        "(rút ngắn khoảng thời gian hoặc dùng interval=day)",
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
    # Relays
    "relay_host_unresolvable": {
        "en": "{field}: the host {host} does not resolve to any address",
        "vi": "{field}: tên máy {host} không phân giải ra địa chỉ nào",
    },
    "relay_host_refused": {
        "en": "{field}: {host} resolves to {address}, a {problem} address; "
        "relays only go to public addresses",
        "vi": "{field}: {host} trỏ tới {address}, một địa chỉ {problem}; "
        "relay chỉ được trỏ tới địa chỉ công khai",
    },
    "field_null": {"en": "{field}: must not be null", "vi": "{field}: không được để null"},
    # Operations
    "metrics_token_required": {
        "en": "/metrics needs the metrics bearer token (Authorization: Bearer …) from another host",
        "vi": "/metrics cần bearer token của metrics (Authorization: Bearer …) khi gọi từ máy khác",
    },
    "metrics_local_only": {
        "en": "/metrics is served only to clients on this machine; "
        "set POSTHORN_METRICS_TOKEN to open it to others",
        "vi": "/metrics chỉ phục vụ client trên chính máy này; "
        "đặt POSTHORN_METRICS_TOKEN để mở cho máy khác",
    },
    # Lists, contacts, bulk jobs, the v2 form API
    "variables_invalid": {
        "en": "{field}: an object of at most {limit} variables (8 KB) is expected",
        "vi": "{field}: cần một object tối đa {limit} biến (8 KB)",
    },
    "too_many_items": {
        "en": "{field}: at most {limit} items",
        "vi": "{field}: tối đa {limit} phần tử",
    },
    "contact_exists": {
        "en": "The contact {email} is already on this list",
        "vi": "Liên hệ {email} đã có trong danh sách này",
    },
    "csv_required": {
        "en": "Send the CSV as a multipart 'file' field or as a text/csv body",
        "vi": "Hãy gửi CSV trong trường multipart 'file' hoặc làm body text/csv",
    },
    "csv_invalid": {
        "en": "The CSV cannot be read at record {line}: {reason}",
        "vi": "Không đọc được CSV tại bản ghi {line}: {reason}",
    },
    "csv_record_too_long": {
        "en": "The CSV record {line} is longer than {limit} characters",
        "vi": "Bản ghi CSV {line} dài hơn {limit} ký tự",
    },
    "csv_header_missing": {
        "en": "The CSV is empty: a header row naming an 'email' column is required",
        "vi": "CSV trống: cần dòng tiêu đề có cột 'email'",
    },
    "csv_email_column": {
        "en": "The CSV header row has no 'email' column",
        "vi": "Dòng tiêu đề CSV không có cột 'email'",
    },
    "bulk_recipients_required": {
        "en": "Give either recipients or list_id (a list job needs list_id)",
        "vi": "Cần recipients hoặc list_id (gửi theo danh sách cần list_id)",
    },
    "schedule_format": {
        "en": "{field}: a time as 'YYYY-MM-DD HH:MM' is expected",
        "vi": "{field}: cần thời gian dạng 'YYYY-MM-DD HH:MM'",
    },
    "schedule_ahead": {
        "en": "{field}: at most {days} days ahead",
        "vi": "{field}: tối đa {days} ngày tới",
    },
    "number_invalid": {
        "en": "{field}: a positive whole number is expected",
        "vi": "{field}: cần một số nguyên dương",
    },
    "message_type_invalid": {
        "en": "{field}: must be bulk or personal",
        "vi": "{field}: phải là bulk hoặc personal",
    },
    "form_array_invalid": {
        "en": "{field}: not a usable array ({reason})",
        "vi": "{field}: không phải mảng hợp lệ ({reason})",
    },
    "method_unknown": {
        "en": "Unknown method '{method}'",
        "vi": "Phương thức '{method}' không tồn tại",
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
