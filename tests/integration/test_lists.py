"""Lists and contacts over real HTTP: CRUD, per-list subscription state, CSV imports."""

from __future__ import annotations

import itertools
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from posthorn.errors import InvalidRequest
from posthorn.services.container import Services
from posthorn.services.lists import CsvRecords, import_csv
from posthorn.settings import Settings
from posthorn.store.tables import suppressions
from tests.support.domains import owner


def h(account: dict[str, str], permission: str = "full_access") -> dict[str, str]:
    return {"X-API-KEY": account[permission]}


async def new_list(http: httpx.AsyncClient, account: dict[str, str], name: str = "News") -> str:
    created = await http.post("/v1/lists", json={"name": name}, headers=h(account))
    assert created.status_code == 200, created.text
    return str(created.json()["id"])


async def test_list_crud_and_permissions(http: httpx.AsyncClient, account: dict[str, str]) -> None:
    created = await http.post(
        "/v1/lists", json={"name": "Newsletter"}, headers=h(account, "sending_access")
    )
    assert created.status_code == 200
    body = created.json()
    assert body["id"].startswith("lst_") and isinstance(body["numeric_id"], int)
    assert body["contacts"] == {"total": 0, "subscribed": 0, "unsubscribed": 0}
    list_id = body["id"]

    denied = await http.post("/v1/lists", json={"name": "x"}, headers=h(account, "read_only"))
    assert denied.status_code == 403
    assert (await http.post("/v1/lists", json={"name": ""}, headers=h(account))).status_code == 422
    assert (await http.get("/v1/lists", headers={"X-API-KEY": "phk_nope"})).status_code == 401

    for index in range(3):
        await new_list(http, account, f"extra {index}")
    page = (await http.get("/v1/lists?page=2&per_page=3", headers=h(account, "read_only"))).json()
    assert page["total"] == 4 and page["page"] == 2 and page["per_page"] == 3
    assert [item["name"] for item in page["data"]] == ["Newsletter"]
    assert (await http.get("/v1/lists?per_page=101", headers=h(account))).status_code == 422

    renamed = await http.patch(f"/v1/lists/{list_id}", json={"name": "Weekly"}, headers=h(account))
    assert renamed.json()["name"] == "Weekly"
    fetched = await http.get(f"/v1/lists/{list_id}", headers=h(account, "read_only"))
    assert fetched.json()["name"] == "Weekly"

    assert (
        await http.delete(f"/v1/lists/{list_id}", headers=h(account, "sending_access"))
    ).status_code == 403
    deleted = await http.delete(f"/v1/lists/{list_id}", headers=h(account))
    assert deleted.json() == {"id": list_id, "deleted": True}
    assert (await http.get(f"/v1/lists/{list_id}", headers=h(account))).status_code == 404
    assert (await http.delete(f"/v1/lists/{list_id}", headers=h(account))).status_code == 404


async def test_another_accounts_list_is_not_found(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    list_id = await new_list(http, account)
    other = await services.accounts.create_account("other")
    key = (await services.accounts.create_key(other.id, name="k")).key
    response = await http.get(f"/v1/lists/{list_id}/contacts", headers={"X-API-KEY": key})
    assert response.status_code == 404
    add = await http.post(
        f"/v1/lists/{list_id}/contacts",
        json={"email": "a@example.test"},
        headers={"X-API-KEY": key},
    )
    assert add.status_code == 404


async def test_contacts_add_search_subscription_and_delete(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    list_id = await new_list(http, account)
    url = f"/v1/lists/{list_id}/contacts"
    one = await http.post(
        url,
        json={"email": "Ann@Example.test", "variables": {"name": "Ann"}},
        headers=h(account, "sending_access"),
    )
    assert one.status_code == 200
    assert one.json()["email"] == "ann@example.test" and one.json()["status"] == "subscribed"
    assert (
        await http.post(url, json={"email": "ann@example.test"}, headers=h(account))
    ).status_code == 409
    assert (await http.post(url, json={"email": "nope"}, headers=h(account))).status_code == 422
    assert (
        await http.post(url, json={"email": "b@example.test"}, headers=h(account, "read_only"))
    ).status_code == 403

    many = await http.post(
        url,
        json={
            "contacts": [
                {"email": "bob@example.test", "variables": {"name": "Bob"}},
                {"email": "cid@example.test"},
                {"email": "ann@example.test"},
                {"email": "bob@example.test"},
                {"email": "broken"},
                {"email": "dee@example.test", "variables": "not an object"},
            ]
        },
        headers=h(account),
    )
    report = many.json()
    assert (report["imported"], report["invalid"], report["duplicate"]) == (2, 2, 2)
    assert [e["index"] for e in report["errors"]] == [4, 5]

    listed = (await http.get(url, headers=h(account, "read_only"))).json()
    assert listed["total"] == 3
    assert [c["email"] for c in listed["data"]] == [
        "ann@example.test",
        "bob@example.test",
        "cid@example.test",
    ]
    found = (await http.get(f"{url}?search=BO", headers=h(account))).json()
    assert [c["email"] for c in found["data"]] == ["bob@example.test"]
    assert found["data"][0]["variables"] == {"name": "Bob"}

    patched = await http.patch(
        f"{url}/bob@example.test",
        json={"status": "unsubscribed", "variables": {"name": "Robert"}},
        headers=h(account),
    )
    assert patched.status_code == 200
    assert patched.json()["status"] == "unsubscribed" and patched.json()["variables"] == {
        "name": "Robert"
    }
    async with services.db.read() as conn:
        scoped = (
            await conn.execute(
                select(suppressions.c.address, suppressions.c.scope, suppressions.c.reason)
            )
        ).all()
    assert [tuple(r) for r in scoped] == [("bob@example.test", list_id, "unsubscribe")]
    unsubscribed = (await http.get(f"{url}?status=unsubscribed", headers=h(account))).json()
    assert [c["email"] for c in unsubscribed["data"]] == ["bob@example.test"]
    counts = (await http.get(f"/v1/lists/{list_id}", headers=h(account))).json()["contacts"]
    assert counts == {"total": 3, "subscribed": 2, "unsubscribed": 1}

    back = await http.patch(
        f"{url}/bob@example.test", json={"status": "subscribed"}, headers=h(account)
    )
    assert back.json()["status"] == "subscribed"
    async with services.db.read() as conn:
        assert (await conn.execute(select(suppressions.c.address))).all() == []
    assert (
        await http.patch(
            f"{url}/zed@example.test", json={"status": "subscribed"}, headers=h(account)
        )
    ).status_code == 404
    assert (
        await http.patch(f"{url}/bob@example.test", json={"status": "maybe"}, headers=h(account))
    ).status_code == 422

    assert (
        await http.delete(f"{url}/cid@example.test", headers=h(account, "sending_access"))
    ).status_code == 200
    assert (await http.delete(f"{url}/cid@example.test", headers=h(account))).status_code == 404
    assert (await http.get(url, headers=h(account))).json()["total"] == 2


CSV = (
    "Email,First Name,city\r\n"
    "ann@example.test,Ann,Hanoi\r\n"
    'bob@example.test,"Bob, Jr.","Ho Chi\nMinh"\r\n'
    "not-an-address,X,Y\r\n"
    "ANN@example.test,Ann again,\r\n"
    "\r\n"
    "cid@example.test,,\r\n"
)


async def test_csv_import_counts_over_multipart_and_text_csv(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    list_id = await new_list(http, account)
    url = f"/v1/lists/{list_id}/import"
    files = {"file": ("contacts.csv", CSV.encode(), "text/csv")}
    first = await http.post(url, files=files, headers=h(account, "sending_access"))
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["imported"], body["invalid"], body["duplicate"]) == (3, 1, 1)
    assert body["errors"][0]["line"] == 4
    contacts = (await http.get(f"/v1/lists/{list_id}/contacts", headers=h(account))).json()["data"]
    bob = next(c for c in contacts if c["email"] == "bob@example.test")
    assert bob["variables"] == {"first name": "Bob, Jr.", "city": "Ho Chi\nMinh"}
    assert next(c for c in contacts if c["email"] == "cid@example.test")["variables"] == {}

    again = await http.post(
        url, content=CSV.encode(), headers={**h(account), "Content-Type": "text/csv"}
    )
    assert (again.json()["imported"], again.json()["duplicate"]) == (0, 4)

    semicolons = "\ufeffemail;name\ndee@example.test;Dee\n"
    other = await http.post(
        url, content=semicolons.encode(), headers={**h(account), "Content-Type": "text/csv"}
    )
    assert other.json()["imported"] == 1

    assert (await http.post(url, files=files, headers=h(account, "read_only"))).status_code == 403
    no_email = await http.post(
        url, content=b"name,city\nx,y\n", headers={**h(account), "Content-Type": "text/csv"}
    )
    assert no_email.status_code == 422 and "email" in no_email.json()["detail"]
    empty = await http.post(url, content=b"", headers={**h(account), "Content-Type": "text/csv"})
    assert empty.status_code == 422
    latin1 = await http.post(
        url,
        content="email\nzoë@example.test\n".encode("latin-1"),
        headers={**h(account), "Content-Type": "text/csv"},
    )
    assert latin1.status_code == 422 and "UTF-8" in latin1.json()["detail"]
    wrong_type = await http.post(url, json={"file": "x"}, headers=h(account))
    assert wrong_type.status_code == 400
    missing = await http.post("/v1/lists/lst_missing/import", files=files, headers=h(account))
    assert missing.status_code == 404


async def test_csv_import_larger_than_the_body_limit_is_refused(
    http: httpx.AsyncClient, account: dict[str, str], settings: Settings
) -> None:
    list_id = await new_list(http, account)
    big = b"email\n" + b"x@example.test\n" * (settings.max_message_bytes // 15 + 10)
    response = await http.post(
        f"/v1/lists/{list_id}/import",
        content=big,
        headers={**h(account), "Content-Type": "text/csv"},
    )
    assert response.status_code == 413


async def test_cli_import_reports_progress(
    services: Services, account: dict[str, str], tmp_path: Path
) -> None:
    created = await services.lists.create(owner(account["account_id"]), "CLI")
    path = tmp_path / "contacts.csv"
    lines = (
        ["email,n"]
        + [f"user{i}@example.test,{i}" for i in range(3000)]
        + ["bad,1", "user1@example.test,dup"]
    )
    path.write_text("\n".join(lines) + "\n")
    calls: list[tuple[int, int]] = []
    report = await import_csv(
        services,
        account_id=account["account_id"],
        list_id=created["id"],
        path=path,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert (report.imported, report.invalid, report.duplicate) == (3000, 1, 1)
    size = path.stat().st_size
    assert calls[-1] == (size, size) and len(calls) >= 2
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(calls))
    listed = await services.lists.get(account["account_id"], created["id"])
    assert listed["contacts"]["total"] == 3000


def test_csv_records_are_split_across_pieces_and_quotes() -> None:
    text = b'email,note\r\na@x.test,"line one\r\nline ""two"""\r\nb@x.test,plain\n'
    for size in (1, 2, 3, 7, len(text)):
        parser = CsvRecords()
        rows: list[tuple[int, list[str]]] = []
        for start in range(0, len(text), size):
            rows += parser.feed(text[start : start + size])
        rows += parser.feed(b"", final=True)
        assert rows == [
            (1, ["email", "note"]),
            (2, ["a@x.test", 'line one\r\nline "two"']),
            (3, ["b@x.test", "plain"]),
        ]
    unterminated = CsvRecords()
    assert unterminated.feed(b"email\n\nlast@x.test") == [(1, ["email"])]
    assert unterminated.feed(b"", final=True) == [(3, ["last@x.test"])]


def test_csv_record_length_is_bounded() -> None:
    parser = CsvRecords(max_record_chars=100)
    with pytest.raises(InvalidRequest) as caught:
        parser.feed(b'email\n"' + b"x" * 200)
    assert caught.value.code == "csv_record_too_long"
