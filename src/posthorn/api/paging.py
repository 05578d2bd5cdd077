"""``page`` and ``per_page`` of every list route, bounded in one place.

Without an upper bound, ``page=10**19`` makes an offset no database integer holds (a 500).
A million pages of a hundred rows is far past any real listing, and the offset it gives
(10**8) fits every database's 64-bit integer.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

MAX_PAGE = 1_000_000
MAX_PER_PAGE = 100

Page = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"1 to {MAX_PAGE:,}.")]
PerPage = Annotated[int, Query(ge=1, le=MAX_PER_PAGE, description=f"1 to {MAX_PER_PAGE}.")]
