"""Reading bounces and complaints: real-world samples (tests/unit/samples) and edge cases."""

from __future__ import annotations

import base64

import pytest

from posthorn.domain.bounces import (
    Bounce,
    Complaint,
    DeliveryReport,
    Ignored,
    for_recipient,
    parse_report,
    suppresses,
)
from tests.unit.samples import load_sample

RETURN_PATH = "bounce+42.abcdefghijklmnop@posthorn.test"
RECIPIENT = "nobody@example.net"


def sample(name: str, recipient: str = RECIPIENT) -> bytes:
    return load_sample(name, return_path=RETURN_PATH, recipient=recipient)


def only_bounce(data: bytes) -> tuple[DeliveryReport, Bounce]:
    report = parse_report(data)
    assert isinstance(report, DeliveryReport), report
    assert len(report.bounces) == 1
    return report, report.bounces[0]


@pytest.mark.parametrize(
    ("name", "status", "code", "reporting_mta", "text", "suppress"),
    [
        (
            "postfix_user_unknown",
            "5.1.1",
            550,
            "mail.relay.example",
            "User unknown in virtual mailbox table",
            True,
        ),
        # Exim says 5.0.0 for every SMTP rejection; the remote server's code is the precise one.
        ("exim_user_unknown", "5.1.1", 550, "mail.example.org", "User unknown in local", True),
        ("gmail_no_such_user", "5.1.1", 550, "googlemail.com", "does not exist", True),
        (
            "microsoft_recipient_not_found",
            "5.1.10",
            550,
            "AM0PR01MB1234.eurprd01.prod.exchangelabs.com",
            "RESOLVER.ADR.RecipientNotFound",
            True,
        ),
        # A blocklist refusal is about us, not the address: a bounce, no suppression.
        ("postfix_policy_block", "5.7.1", 554, "mail.relay.example", "zen.spamhaus.org", False),
    ],
)
def test_delivery_status_notifications(
    name: str, status: str, code: int, reporting_mta: str, text: str, suppress: bool
) -> None:
    report, bounce = only_bounce(sample(name))
    assert report.source == "dsn"
    assert report.reporting_mta == reporting_mta
    assert bounce.recipient == RECIPIENT
    assert bounce.action == "failed" and bounce.permanent
    assert bounce.status == status
    assert bounce.reply_code == code
    assert text in bounce.diagnostic
    assert bounce.diagnostic.startswith(f"{code} {status} ")
    assert suppresses(bounce) is suppress


def test_a_multiline_reply_keeps_its_codes_once() -> None:
    _, bounce = only_bounce(sample("gmail_no_such_user"))
    assert bounce.diagnostic.count("5.1.1") == 1
    assert "Please try double-checking the recipient's email address" in bounce.diagnostic
    assert "\n" not in bounce.diagnostic


def test_a_delay_warning_is_not_a_bounce() -> None:
    _, bounce = only_bounce(sample("postfix_delayed"))
    assert bounce.action == "delayed" and not bounce.permanent
    assert bounce.status == "4.4.1"
    assert bounce.reply_code is None  # the diagnostic type is X-Postfix, not smtp
    assert bounce.diagnostic.startswith("connect to mx.example.net")
    assert not suppresses(bounce)


def test_line_endings_do_not_matter() -> None:
    lf = sample("postfix_user_unknown").replace(b"\r\n", b"\n")
    assert parse_report(lf) == parse_report(sample("postfix_user_unknown"))


def test_an_internationalised_report() -> None:
    # RFC 6533: message/global-delivery-status, UTF-8 addresses, \x{HEX} escapes.
    _, bounce = only_bounce(sample("global_dsn_utf8"))
    assert bounce.recipient == "jörg@bücher.example"
    assert bounce.status == "5.1.1" and suppresses(bounce)
    assert "existiert nicht" in bounce.diagnostic


def test_a_complaint() -> None:
    report = parse_report(sample("arf_abuse"))
    assert report == Complaint(
        feedback_type="abuse",
        recipient=RECIPIENT,
        user_agent="ExampleMail-FBL/2.0",
        recipient_stated=True,
    )


def test_a_complaint_with_a_redacted_recipient_names_the_returned_message_s() -> None:
    data = sample("arf_abuse").replace(f"Original-Rcpt-To: <{RECIPIENT}>\r\n".encode(), b"")
    report = parse_report(data)
    assert isinstance(report, Complaint) and report.recipient == RECIPIENT
    assert not report.recipient_stated  # a guess: who shared the transaction decides its use


@pytest.mark.parametrize("kind", ["auth-failure", "not-spam"])
def test_feedback_that_is_not_a_complaint(kind: str) -> None:
    data = sample("arf_abuse").replace(b"Feedback-Type: abuse", f"Feedback-Type: {kind}".encode())
    assert parse_report(data) == Ignored(f"{kind} feedback report")


@pytest.mark.parametrize("name", ["vacation_auto_reply", "exchange_automatic_reply"])
def test_auto_replies_are_not_bounces(name: str) -> None:
    report = parse_report(sample(name))
    assert isinstance(report, Ignored) and "auto" in report.reason


def test_auto_submitted_alone_marks_an_auto_reply() -> None:
    data = sample("vacation_auto_reply").replace(b"Subject: Auto: hello", b"Subject: Re: hello")
    # Even one that talks like a bounce (RFC 3834 §5: Auto-Submitted: auto-replied).
    data += b"Your message could not be delivered: 550 5.1.1 user unknown\r\n"
    report = parse_report(data)
    assert isinstance(report, Ignored) and "Auto-Submitted: auto-replied" in report.reason


def test_a_bounce_in_no_standard_format() -> None:
    report, bounce = only_bounce(sample("qmail_failure_notice"))
    assert report.source == "heuristic"
    assert bounce.recipient == RECIPIENT and bounce.permanent
    # The reply in the explanation, not the "550 5.0.0" in the returned copy below it.
    assert bounce.status == "5.1.1" and bounce.reply_code == 550
    assert bounce.diagnostic == f"550 5.1.1 <{RECIPIENT}>... User unknown"
    assert suppresses(bounce)


def test_an_ordinary_message_is_ignored() -> None:
    data = (
        b"From: Jane <jane@example.net>\r\nTo: " + RETURN_PATH.encode() + b"\r\n"
        b"Subject: Re: hello\r\n\r\nThanks, got it!\r\n"
    )
    assert parse_report(data) == Ignored("not a delivery report")


def dsn(*recipient_blocks: str, report_type: str = "delivery-status", cte: str = "") -> bytes:
    """A minimal multipart/report with the given per-recipient field blocks."""
    status = "Reporting-MTA: dns; mx.example\n\n" + "\n\n".join(recipient_blocks) + "\n"
    body = status.encode()
    headers = "Content-Type: message/delivery-status\n"
    if cte == "base64":
        headers += "Content-Transfer-Encoding: base64\n"
        body = base64.encodebytes(body)
    param = f"; report-type={report_type}" if report_type else ""
    return (
        (
            f"From: MAILER-DAEMON@mx.example\nTo: {RETURN_PATH}\nSubject: x\nMIME-Version: 1.0\n"
            f'Content-Type: multipart/report{param}; boundary="b"\n\n'
            f"--b\nContent-Type: text/plain\n\nreport\n\n--b\n{headers}\n"
        ).encode()
        + body
        + b"\n--b--\n"
    )


FAILED = f"Final-Recipient: rfc822; {RECIPIENT}\nAction: failed\nStatus: 5.1.1"


def test_a_base64_encoded_status_part() -> None:
    _, bounce = only_bounce(dsn(FAILED, cte="base64"))
    assert bounce.status == "5.1.1" and bounce.permanent


def test_a_report_without_report_type_is_known_by_its_part() -> None:
    _, bounce = only_bounce(dsn(FAILED, report_type=""))
    assert bounce.status == "5.1.1"


def test_a_report_inside_another_multipart() -> None:
    inner = dsn(FAILED).split(b"\n", 4)[4]  # from the Content-Type line on
    outer = (
        b"From: MAILER-DAEMON@mx.example\nSubject: x\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="outer"\n\n'
        b"--outer\n" + inner + b"\n--outer--\n"
    )
    _, bounce = only_bounce(outer)
    assert bounce.recipient == RECIPIENT


def test_success_notifications_are_ignored() -> None:
    delivered = f"Final-Recipient: rfc822; {RECIPIENT}\nAction: delivered\nStatus: 2.0.0"
    relayed = "Final-Recipient: rfc822; other@example.net\nAction: relayed\nStatus: 2.0.0"
    assert parse_report(dsn(delivered, relayed)) == Ignored(
        "delivery status notification without failures"
    )


def test_a_read_receipt_is_ignored() -> None:
    mdn = dsn(
        "Final-Recipient: rfc822; x@example\nDisposition: manual-action/MDN-sent-manually; displayed",
        report_type="disposition-notification",
    )
    assert parse_report(mdn) == Ignored("disposition-notification report")


def test_missing_action_is_inferred_from_the_status() -> None:
    _, bounce = only_bounce(dsn(f"Final-Recipient: rfc822; {RECIPIENT}\nStatus: 5.2.1"))
    assert bounce.action == "failed" and suppresses(bounce)  # 5.2.1 mailbox disabled


def test_a_status_with_a_comment_and_an_action_with_one() -> None:
    fields = f"Final-Recipient: RFC822; <{RECIPIENT}>\nAction: Failed (gave up)\nStatus: 5.1.1 (bad destination mailbox address)"
    _, bounce = only_bounce(dsn(fields))
    assert (bounce.recipient, bounce.action, bounce.status) == (RECIPIENT, "failed", "5.1.1")


def test_failed_after_retries_bounces_without_suppressing() -> None:
    # The remote MTA gave up (RFC 3464 §2.3.3 "failed") on a temporary condition (4.4.7).
    fields = f"Final-Recipient: rfc822; {RECIPIENT}\nAction: failed\nStatus: 4.4.7\nDiagnostic-Code: smtp; 451 4.4.7 delivery time expired"
    _, bounce = only_bounce(dsn(fields))
    assert bounce.permanent and bounce.reply_code == 451 and not suppresses(bounce)


@pytest.mark.parametrize(
    ("status", "diagnostic", "suppress"),
    [
        ("5.1.1", "", True),
        ("5.2.2", "smtp; 552 5.2.2 mailbox full", False),  # over quota: usually transient
        ("5.3.4", "smtp; 552 5.3.4 message too big", False),
        ("5.7.26", "smtp; 550 5.7.26 unauthenticated email is not accepted (DMARC)", False),
        ("5.0.0", "smtp; 550 user unknown", True),  # no detail code, but the text says so
        ("5.0.0", "smtp; 550 rejected by policy: user unknown", False),
        ("5.0.0", "X-Unix; mailbox unavailable", False),
    ],
)
def test_what_suppresses(status: str, diagnostic: str, suppress: bool) -> None:
    fields = f"Final-Recipient: rfc822; {RECIPIENT}\nAction: failed\nStatus: {status}"
    if diagnostic:
        fields += f"\nDiagnostic-Code: {diagnostic}"
    _, bounce = only_bounce(dsn(fields))
    assert suppresses(bounce) is suppress


def test_for_recipient_picks_the_delivery_s_entry() -> None:
    report = parse_report(
        dsn(
            "Final-Recipient: rfc822; first@example.net\nAction: delayed\nStatus: 4.4.1",
            "Final-Recipient: rfc822; forward@elsewhere.example\nAction: failed\nStatus: 5.1.1",
            f"Final-Recipient: rfc822; {RECIPIENT.upper()}\nAction: failed\nStatus: 5.2.1",
        )
    )
    assert isinstance(report, DeliveryReport) and len(report.bounces) == 3
    picked = for_recipient(report, RECIPIENT)
    assert picked is not None and picked.status == "5.2.1"
    # No entry names the address (it was forwarded): the first failure stands for it.
    other = for_recipient(report, "someone@example.net")
    assert other is not None and other.recipient == "forward@elsewhere.example"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"garbage without headers",
        b"Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\nno end",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n",
        b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\n--x--",
        b'Content-Type: multipart/mixed; boundary="\xff"\r\n\r\n--\xff\r\n\r\n--\xff--',
    ],
)
def test_malformed_messages_are_ignored_not_raised(data: bytes) -> None:
    assert isinstance(parse_report(data), Ignored)


def test_an_unterminated_report_still_reads() -> None:
    data = dsn(FAILED).removesuffix(b"\n--b--\n")
    _, bounce = only_bounce(data)
    assert bounce.status == "5.1.1"
