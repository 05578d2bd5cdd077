"""An attachment's content type is ASCII (RFC 6838 §4.2): anything else is refused when the
attachment is made, not when its header is written."""

from __future__ import annotations

import pytest

from posthorn.mime.compose import Attachment


@pytest.mark.parametrize(
    "content_type", ["text/pl\u00e0in", "\u00e9/x", "x", "text/plain; n=\u00e9"]
)
def test_a_content_type_outside_ascii_tokens_is_refused(content_type: str) -> None:
    with pytest.raises(ValueError, match="content type"):
        Attachment(filename="a.txt", content=b"hi", content_type=content_type)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/vnd.ms-excel", "text/csv; charset=utf-8"]
)
def test_ordinary_content_types_are_kept(content_type: str) -> None:
    assert (
        Attachment(filename="a", content=b"", content_type=content_type).content_type
        == content_type
    )
