"""Messages as mail systems really send them back, with the return path and the recipient
left as ``{{return_path}}`` and ``{{recipient}}`` so that a test can name its own."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def load_sample(name: str, *, return_path: str, recipient: str) -> bytes:
    """The sample ``name`` (``postfix_user_unknown``), filled in, with CRLF line endings as
    it travels over SMTP."""
    data = (HERE / f"{name}.eml").read_bytes()
    data = data.replace(b"{{return_path}}", return_path.encode())
    data = data.replace(b"{{recipient}}", recipient.encode())
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
