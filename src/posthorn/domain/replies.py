"""What an SMTP reply means for a delivery: pure functions over ``(code, message)``.

``code`` is the three-digit reply code (RFC 5321 §4.2) and ``message`` the reply text as an SMTP
client library hands it over: the text after the code, continuation lines joined with ``\\n``.
Most servers start the text with an enhanced status code (RFC 3463, announced with
ENHANCEDSTATUSCODES, RFC 2034 §4), e.g. ``550 5.1.1 no such user``.

Three questions are answered here, without I/O:

- is the reply a success, a temporary or a permanent failure (:func:`classify_reply`);
- does a permanent failure condemn the *address*, so that it should be suppressed, or only
  this message, sender or moment (:func:`should_suppress`);
- did the server say when to come back (:func:`parse_retry_hint`).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final, Literal

ReplyClass = Literal["ok", "temporary", "permanent"]

# RFC 3463 §2: class "." subject "." detail, class one of 2/4/5, the others 1-3 digits. RFC 2034
# §4 puts it first in the text of every line; the basic code is tolerated in front of it so
# that a whole reply line may be passed as well.
_ENHANCED_CODE: Final = re.compile(r"^\s*(?:\d{3}[ -])?([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")

# RFC 3463 §3.2-3.3 detail codes that say the recipient address itself cannot receive mail:
# retrying or resending to it is pointless, so the address is suppressed.
SUPPRESSING_CODES: Final = frozenset(
    {
        "5.1.1",  # bad destination mailbox address
        "5.1.2",  # bad destination system address
        "5.1.3",  # bad destination mailbox address syntax
        "5.1.6",  # destination mailbox has moved, no forwarding address
        "5.1.10",  # recipient address has null MX (RFC 7505 §4.2)
        "5.2.1",  # mailbox disabled, not accepting messages
    }
)

# Permanent failures that are about the message, the sender or our reputation, not the
# recipient: bounce this message but keep sending to the address.
_NON_SUPPRESSING_SUBJECTS: Final = frozenset(
    {
        "3",  # mail system status, e.g. 5.3.4 message too big for system
        "4",  # network and routing
        "5",  # mail delivery protocol
        "6",  # message content or media
        "7",  # security or policy: spam, reputation, authentication, blocklists
    }
)
_NON_SUPPRESSING_CODES: Final = frozenset(
    {
        "5.1.7",  # bad sender's mailbox address syntax
        "5.1.8",  # bad sender's system address
        "5.2.2",  # mailbox full: usually transient even when reported as 5xx
        "5.2.3",  # message length exceeds administrative limit
    }
)

# Texts of servers that send no enhanced code (or only a generic x.0.0 / x.1.0) for an unknown
# or disabled mailbox. Matched only on 550/551/553/554, the mailbox-level replies of RFC 5321
# §4.2.2-4.2.3.
_UNKNOWN_MAILBOX: Final = re.compile(
    r"user\s+unknown|unknown\s+user|no\s+such\s+(?:user|mailbox|recipient|account)"
    r"|(?:mailbox|recipient|user|account|address)\s+(?:not\s+found|does\s+not\s+exist|"
    r"doesn't\s+exist|unknown|disabled|is\s+disabled|has\s+been\s+disabled)"
    r"|unknown\s+(?:recipient|mailbox)|invalid\s+(?:recipient|mailbox)"
    r"|(?:account|mailbox)\s+(?:is\s+)?(?:inactive|deactivated|closed)",
    re.IGNORECASE,
)
# A policy word anywhere means the refusal may be about us even if it mentions the user.
_POLICY_WORDS: Final = re.compile(
    r"spam|block|blacklist|blocklist|denylist|reputation|policy|rate\s+limit|too\s+many"
    r"|dmarc|dkim|spf|authenticat|relay(?:ing)?\s+(?:denied|not\s+permitted)",
    re.IGNORECASE,
)
_MAILBOX_REPLY_CODES: Final = frozenset({550, 551, 553, 554})

# RFC 5321 §4.5.3.1.10: a 552 "too many recipients" at RCPT is to be treated as 452.
_TOO_MANY_RECIPIENTS: Final = re.compile(r"too\s+many\s+recipients", re.IGNORECASE)

_RETRY_HINT: Final = re.compile(
    r"(?:try(?:\s+it)?\s+again|retry|resend|wait|greylist\w*|graylist\w*|come\s+back)"
    r"\D{0,30}?(\d{1,6})\s*"
    r"(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)\b",
    re.IGNORECASE,
)
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600}
# A hint is a server's wish for the next attempt, not a schedule: anything longer than this is
# left to the retry policy.
MAX_RETRY_HINT: Final = timedelta(days=1)


def parse_enhanced_code(message: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of ``message`` ("5.1.1"), if any.

    Leading zeros are dropped ("5.01.1" -> "5.1.1") so the result compares as a string.
    """
    match = _ENHANCED_CODE.match(message)
    if match is None:
        return None
    klass, subject, detail = (int(part) for part in match.groups())
    return f"{klass}.{subject}.{detail}"


def classify_reply(code: int, message: str = "") -> ReplyClass:
    """Success, temporary or permanent failure, from the basic reply code (RFC 5321 §4.2.1).

    The basic code decides: it is the one every server must send and every client must act on;
    an enhanced code that disagrees with it does not override it.
    """
    if 200 <= code < 400:
        # 2yz positive completion; 3yz positive intermediate (354 after DATA, 334 in AUTH).
        return "ok"
    if 400 <= code < 500:
        return "temporary"
    if 500 <= code < 600:
        if code == 552 and (
            parse_enhanced_code(message) == "5.5.3" or _TOO_MANY_RECIPIENTS.search(message)
        ):
            return "temporary"
        return "permanent"
    # Not a valid reply (RFC 5321 §4.2: the first digit is 2-5): nothing proves a permanent
    # failure, so the message is kept and tried again.
    return "temporary"


def should_suppress(code: int, message: str) -> bool:
    """Whether a failure says the recipient address cannot receive mail at all.

    True only for permanent failures about the mailbox or its domain (5.1.1, 5.1.10, 5.2.1, ...
    or an "unknown user" text on a mailbox-level reply); False for policy and reputation
    blocks (5.7.x), size (5.3.4), content, protocol and sender problems, which concern the
    message or us rather than the address.
    """
    if classify_reply(code, message) != "permanent":
        return False
    enhanced = parse_enhanced_code(message)
    if enhanced is not None:
        if enhanced in SUPPRESSING_CODES:
            return True
        if enhanced in _NON_SUPPRESSING_CODES:
            return False
        if enhanced.split(".")[1] in _NON_SUPPRESSING_SUBJECTS:
            return False
    if code not in _MAILBOX_REPLY_CODES:
        return False
    return bool(_UNKNOWN_MAILBOX.search(message)) and not _POLICY_WORDS.search(message)


def parse_retry_hint(message: str) -> timedelta | None:
    """An explicit "try again in N minutes/seconds/hours" in a reply, if the server gave one.

    Greylisting servers often say how long they will keep refusing ("greylisted for 300
    seconds"); coming back earlier only earns another 4xx. Vague texts ("try again later")
    give None. The result is capped at :data:`MAX_RETRY_HINT`.
    """
    match = _RETRY_HINT.search(message)
    if match is None:
        return None
    amount = int(match.group(1))
    unit = match.group(2)[0].lower()
    return min(timedelta(seconds=amount * _UNIT_SECONDS[unit]), MAX_RETRY_HINT)


def reply_text(message: str) -> str:
    """A multi-line reply text as one line, for records and messages shown to people.

    RFC 2034 §4 repeats the enhanced code on every line; the repetitions are dropped.
    """
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return ""
    enhanced = parse_enhanced_code(lines[0])
    parts = [lines[0]]
    for line in lines[1:]:
        match = _ENHANCED_CODE.match(line)
        if match is not None and parse_enhanced_code(line) == enhanced:
            line = line[match.end() :].strip()
        if line:
            parts.append(line)
    return " ".join(parts)
