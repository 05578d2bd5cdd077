import time
import uuid

from posthorn.domain.ids import new_email_id, uuid7


def test_is_a_version_7_rfc_uuid() -> None:
    value = uuid.UUID(new_email_id())
    assert value.version == 7
    assert value.variant == uuid.RFC_4122


def test_carries_its_creation_time_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert before <= value.int >> 80 <= after


def test_later_ids_sort_after_earlier_ones_as_text() -> None:
    start = 1_800_000_000_000_000_000  # ns
    ids = [str(uuid7(start + ms * 1_000_000)) for ms in range(0, 5000, 7)]
    assert ids == sorted(ids)


def test_ids_of_one_millisecond_differ() -> None:
    now = time.time_ns()
    ids = {uuid7(now) for _ in range(10_000)}
    assert len(ids) == 10_000
    assert len({i.int >> 80 for i in ids}) == 1
