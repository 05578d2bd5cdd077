"""A short record of one delivery attempt's SMTP dialogue, kept with its event.

Commands and replies only: never the message content, never credentials (AUTH is recorded as
the mechanisms offered). A transaction for several recipients is one dialogue; each recipient
sees it without the RCPT lines about the others (:meth:`Transcript.lines`).
"""

from __future__ import annotations

from typing import Final

_TRANSCRIPT_LINES: Final = 80  # lines of one recipient's view
_TRANSCRIPT_WIDTH: Final = 300
# A dialogue is bounded (a few hosts, a few commands each, RCPT per recipient); this only
# guards against a bug.
_KEPT_LINES: Final = 4000


class Transcript:
    """A short record of the SMTP dialogue: commands and replies, never content or secrets."""

    def __init__(self) -> None:
        self._lines: list[tuple[str | None, str]] = []  # (the recipient it is about, line)
        self._dropped = 0

    def command(self, text: str, *, about: str | None = None) -> None:
        self._add("> " + text, about)

    def reply(self, code: int, message: str, *, about: str | None = None) -> None:
        self._add(f"< {code} " + " | ".join(message.splitlines()), about)

    def note(self, text: str, *, about: str | None = None) -> None:
        self._add("* " + text, about)

    def lines(self, recipient: str | None = None) -> tuple[str, ...]:
        """The dialogue so far, as ``recipient`` should see it: without the lines about other
        recipients (all of it when None), cut to a bounded length."""
        view = [line for about, line in self._lines if about is None or recipient in (None, about)]
        dropped = max(len(view) - _TRANSCRIPT_LINES, 0) + self._dropped
        if dropped:
            return (*view[:_TRANSCRIPT_LINES], f"* ... {dropped} more lines")
        return tuple(view)

    def _add(self, line: str, about: str | None) -> None:
        if len(self._lines) >= _KEPT_LINES:
            self._dropped += 1
            return
        if len(line) > _TRANSCRIPT_WIDTH:
            line = line[: _TRANSCRIPT_WIDTH - 3] + "..."
        self._lines.append((about, line))
