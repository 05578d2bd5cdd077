"""The SMTP path parser's fast way gives aiosmtpd's own answer, or leaves the case to it."""

from __future__ import annotations

from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from posthorn.smtp.protocol import SubmissionSMTP

ARGUMENTS = [
    "<user@example.test>",
    "<user@example.test> SIZE=5000",
    "<user@example.test>  BODY=8BITMIME SMTPUTF8",
    "<user@example.test>\tSIZE=1",
    "<user@example.test> (a comment) SIZE=1",
    "<user@example.test> \x0b",
    "<user@example.test>\x0bSIZE=1",
    "<user@example.test>SIZE=1",
    "<user@example.test> ",
    "<first.last+tag@mail.example.test>",
    "<o'brien@example.test>",
    "<x@a>",
    "<UPPER@EXAMPLE.TEST>",
    "<>",
    "<> SIZE=10",
    "",
    "user@example.test",
    '<"quoted local"@example.test>',
    "<a..b@example.test>",
    "<.a@example.test>",
    "<a.@example.test>",
    "<user@[127.0.0.1]>",
    "<user@-example.test>",
    "<user@example.test->",
    "<@relay.test:user@example.test>",
    "<usér@exämple.test>",
    "<user@example.test",
    "<user(comment)@example.test>",
    "<user@example..test>",
    "<" + "l" * 70 + "@example.test>",
]


def _session(local_part_limit: int) -> Any:
    """Just enough of a session for ``_getaddr``."""
    session = SubmissionSMTP.__new__(SubmissionSMTP)
    session.local_part_limit = local_part_limit
    return session


@pytest.mark.parametrize("limit", [0, 64])
@pytest.mark.parametrize("arg", ARGUMENTS)
def test_the_fast_path_agrees_with_aiosmtpd(arg: str, limit: int) -> None:
    session = _session(limit)
    assert SubmissionSMTP._getaddr(session, arg) == SMTP._getaddr(session, arg)
