"""Messages per second: posthorn.mime.compose against the standard library's EmailMessage.

Run with ``.venv/bin/python bench/bench_mime.py``; it takes about 15 seconds. Each case builds
the same message both ways (html + text of about 2 KB, optionally one small attachment) and
prints the rates and their ratio.
"""

from __future__ import annotations

import email.policy
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime

from posthorn.domain.addresses import Address, format_address
from posthorn.mime import Attachment, MessageSpec, compose

SECONDS_PER_RUN = 1.5
DATE = datetime(2026, 11, 23, 18, 41, 30, tzinfo=UTC)

TEXT_EN = (
    "Hi Jane,\n\nThanks for your order #12345. Here is your receipt.\n\n"
    + "".join(f"  {n} x Widget model {n:03d} ................ $ {n * 3}.00\n" for n in range(1, 13))
    + "\nTotal: $ 234.00\n\nQuestions? Just reply to this email.\n-- \nAcme Billing\n"
)
HTML_EN = (
    '<!doctype html><html><body style="font-family: sans-serif">'
    "<p>Hi Jane,</p><p>Thanks for your order <b>#12345</b>. Here is your receipt.</p><table>"
    + "".join(
        f'<tr><td>{n} x Widget model {n:03d}</td><td align="right">$ {n * 3}.00</td></tr>\n'
        for n in range(1, 13)
    )
    + "</table><p>Total: <b>$ 234.00</b></p><p>Questions? Just reply to this email.</p>"
    "</body></html>\n"
)
TEXT_VI = TEXT_EN.replace("Thanks for your order", "Cảm ơn bạn đã đặt hàng").replace(
    "Widget model", "Sản phẩm mẫu"
)
HTML_VI = HTML_EN.replace("Thanks for your order", "Cảm ơn bạn đã đặt hàng").replace(
    "Widget model", "Sản phẩm mẫu"
)
ATTACHMENT = Attachment(
    "receipt-12345.pdf", b"%PDF-1.4\n" + bytes(range(256)) * 6, "application/pdf"
)


def make_spec(*, text: str, html: str, subject: str, with_attachment: bool) -> MessageSpec:
    return MessageSpec(
        from_address=Address("billing@acme.example", "Acme Billing"),
        to=(Address("jane@example.com", "Jane Doe"),),
        subject=subject,
        message_id="0f6c3b9e5d2a@mail.acme.example",
        date=DATE,
        text=text,
        html=html,
        reply_to=Address("support@acme.example", "Acme Support"),
        attachments=(ATTACHMENT,) if with_attachment else (),
        headers=(("X-Campaign", "receipts"),),
    )


def stdlib_build(spec: MessageSpec) -> bytes:
    """The same message through email.message.EmailMessage, the usual Python way."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = format_address(spec.from_address)
    message["To"] = ", ".join(format_address(address) for address in spec.to)
    if spec.reply_to is not None:
        message["Reply-To"] = format_address(spec.reply_to)
    message["Subject"] = spec.subject
    message["Date"] = format_datetime(spec.date)
    message["Message-ID"] = f"<{spec.message_id}>"
    for name, value in spec.headers:
        message[name] = value
    message.set_content(spec.text or "")
    message.add_alternative(spec.html or "", subtype="html")
    for attachment in spec.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        message.add_attachment(
            attachment.content, maintype=maintype, subtype=subtype, filename=attachment.filename
        )
    return message.as_bytes()


def rate(build: Callable[[MessageSpec], bytes], spec: MessageSpec) -> float:
    build(spec)
    count = 0
    batch = 50
    start = time.perf_counter()
    deadline = start + SECONDS_PER_RUN
    while True:
        for _ in range(batch):
            build(spec)
        count += batch
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def check_same_message(spec: MessageSpec) -> None:
    parser = BytesParser(policy=email.policy.default)
    ours, theirs = parser.parsebytes(compose(spec)), parser.parsebytes(stdlib_build(spec))
    for name in ("From", "To", "Reply-To", "Subject", "Date", "Message-ID", "X-Campaign"):
        assert str(ours[name]) == str(theirs[name]), name
    for kind in ("plain", "html"):
        our_body, their_body = ours.get_body((kind,)), theirs.get_body((kind,))
        assert our_body is not None and their_body is not None
        assert our_body.get_content().replace("\r\n", "\n") == their_body.get_content().replace(
            "\r\n", "\n"
        )


def main() -> None:
    cases = [
        (
            "html+text, ASCII",
            make_spec(
                text=TEXT_EN,
                html=HTML_EN,
                subject="Your receipt for order #12345",
                with_attachment=False,
            ),
        ),
        (
            "html+text + 1.5 KB PDF",
            make_spec(
                text=TEXT_EN,
                html=HTML_EN,
                subject="Your receipt for order #12345",
                with_attachment=True,
            ),
        ),
        (
            "html+text, Vietnamese",
            make_spec(
                text=TEXT_VI,
                html=HTML_VI,
                subject="Hóa đơn cho đơn hàng #12345",
                with_attachment=False,
            ),
        ),
    ]
    print(f"{'case':<26}{'size':>8}{'posthorn/s':>14}{'stdlib/s':>12}{'ratio':>9}")
    for label, spec in cases:
        check_same_message(spec)
        ours = rate(compose, spec)
        theirs = rate(stdlib_build, spec)
        size = len(compose(spec))
        print(f"{label:<26}{size:>7}B{ours:>14,.0f}{theirs:>12,.0f}{ours / theirs:>8.1f}x")


if __name__ == "__main__":
    main()
