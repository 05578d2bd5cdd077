"""Collecting the text after DATA: pure, bounded in memory, strict about line endings.

The session feeds :class:`DataReader` what it reads, in pieces of any size, until the reader
says the data has ended. The reader

- ends the data only at CRLF "." CRLF (RFC 5321 §4.1.1.4), the data itself starting at a line
  start. A bare LF or a bare CR anywhere in the text makes the whole message refused (RFC 5321
  §2.3.8: they are not line endings), so nothing a lenient receiver might take for an end of
  data (``\\n.\\n``, ``\\n.\\r\\n``, ``\\r.\\r\\n``) is ever queued and passed on: one message
  or a refusal, never two (the SMTP smuggling attacks, CVE-2023-51766 and CVE-2024-27305);
- removes the transparency dots (RFC 5321 §4.5.2);
- refuses text lines longer than the limit (RFC 5321 §4.5.3.1.6) and messages larger than the
  size limit (RFC 1870). Past the size limit nothing more is kept, so memory stays bounded by
  the limit whatever the client sends, a line that never ends included.

The reply comes after the final dot in every case (RFC 5321 §4.2.5), unless the client keeps
sending far past the limit: then :attr:`DataReader.runaway` says to give up on it.

The checks run once over the whole message (``bytes.count``, ``bytes.split``), not per line:
a 5 KB message costs a few C-level scans instead of a hundred Python iterations.
"""

from __future__ import annotations

from enum import Enum

CRLF = b"\r\n"
END = b"\r\n.\r\n"  # the CRLF that ends the last line, the dot, the CRLF after it
_KEEP = len(END) - 1  # bytes carried over between pieces, to find an END split across them


class Problem(Enum):
    TOO_BIG = "too_big"
    LINE_TOO_LONG = "line_too_long"
    BARE_LINE_ENDING = "bare_line_ending"


class DataReader:
    """One message's DATA, fed in pieces; see the module docstring."""

    def __init__(self, *, size_limit: int, line_limit: int) -> None:
        self._size_limit = size_limit
        self._line_limit = line_limit  # octets per line, CRLF and transparency dot included
        self._parts: list[bytes] = []
        self._received = 0  # octets fed so far
        # The data starts at a line start, as if right after a CRLF: "." CRLF first ends it.
        self._tail = CRLF
        self._length: int | None = None  # of the message as sent, once the END is found
        self.problem: Problem | None = None

    @property
    def done(self) -> bool:
        return self._length is not None

    @property
    def runaway(self) -> bool:
        """Whether the client sent more than twice the size limit: stop listening to it."""
        return self._received > 2 * self._size_limit

    def feed(self, piece: bytes) -> int:
        """Take the next bytes; returns how many of them belong to DATA (all of them unless
        the END is inside ``piece``: what follows it is the client's next command)."""
        if self.done:
            raise RuntimeError("DATA already ended")
        window = self._tail + piece
        at = window.find(END)
        if at < 0:
            self._keep(piece)
            self._tail = window[-_KEEP:]
            return len(piece)
        # Positions in the stream "CRLF + data": the END starts at ``start``, which is also the
        # length of the message (its last CRLF included).
        start = self._received + len(CRLF) - len(self._tail) + at
        used = start + len(END) - len(CRLF) - self._received
        self._keep(piece[:used])
        self._length = start
        if start > self._size_limit:
            self._fail(Problem.TOO_BIG)
        return used

    def finish(self) -> bytes | Problem:
        """Once DATA has ended: the message as the client wrote it (CRLF line endings,
        transparency removed), or why it is refused."""
        if self._length is None:
            raise RuntimeError("DATA has not ended")
        if self.problem is not None:
            return self.problem
        data = b"".join(self._parts)[: self._length]
        self._parts = []
        crlf = data.count(CRLF)
        if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
            return Problem.BARE_LINE_ENDING
        lines = data.split(CRLF)
        if max(map(len, lines)) + len(CRLF) > self._line_limit:
            return Problem.LINE_TOO_LONG
        # RFC 5321 §4.5.2: a line that starts with a period had one added by the client.
        if data.startswith(b".") or b"\r\n." in data:
            data = CRLF.join(line[1:] if line.startswith(b".") else line for line in lines)
        return data

    def _keep(self, piece: bytes) -> None:
        self._received += len(piece)
        if self.problem is None and self._received > self._size_limit + len(END):
            self._fail(Problem.TOO_BIG)
        if self.problem is None:
            self._parts.append(piece)

    def _fail(self, problem: Problem) -> None:
        if self.problem is None:
            self.problem = problem
            self._parts = []  # what is refused need not be kept
