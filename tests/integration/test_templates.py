"""``/v1/templates`` over real HTTP on SQLite and PostgreSQL: CRUD, variables, syntax errors
with positions, previews, the sandbox, permissions and account isolation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from posthorn.errors import InvalidRequest, NotFound
from posthorn.services.container import Services

WELCOME = {
    "name": "welcome",
    "subject": "Welcome, {{ user.first_name }}!",
    "html": "<h1>Hi {{ user.first_name }}</h1>{% for p in plans %}<li>{{ p }}</li>{% endfor %}",
    "text": "Hi {{ user.first_name }}, your code is {{ code }}.",
}


def h(account: dict[str, str], permission: str = "full_access") -> dict[str, str]:
    return {"X-API-KEY": account[permission]}


async def create(
    http: httpx.AsyncClient, account: dict[str, str], body: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await http.post("/v1/templates", json=body or WELCOME, headers=h(account))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_create_detects_variables_and_get_returns_it(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    created = await create(http, account)
    assert created["id"].startswith("tpl_")
    assert created["variables"] == ["code", "plans", "user"]
    assert created["created_at"].endswith("Z") and created["updated_at"].endswith("Z")
    fetched = await http.get(f"/v1/templates/{created['id']}", headers=h(account, "read_only"))
    assert fetched.status_code == 200
    assert fetched.json() == created
    assert {k: created[k] for k in ("name", "subject", "html", "text")} == WELCOME


async def test_list_is_paginated_newest_first(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    ids = [(await create(http, account, {**WELCOME, "name": f"t{n}"}))["id"] for n in range(3)]
    first = (await http.get("/v1/templates?per_page=2", headers=h(account))).json()
    assert first["total"] == 3 and first["page"] == 1 and first["per_page"] == 2
    assert [t["id"] for t in first["data"]] == [ids[2], ids[1]]
    assert set(first["data"][0]) == {
        "id",
        "name",
        "subject",
        "variables",
        "created_at",
        "updated_at",
    }
    second = (await http.get("/v1/templates?per_page=2&page=2", headers=h(account))).json()
    assert [t["id"] for t in second["data"]] == [ids[0]]
    too_many = await http.get("/v1/templates?per_page=101", headers=h(account))
    assert too_many.status_code == 422


async def test_update_rechecks_and_redetects(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    created = await create(http, account)
    url = f"/v1/templates/{created['id']}"
    patched = await http.patch(
        url, json={"subject": "Order {{ order_id }}", "html": None}, headers=h(account)
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["subject"] == "Order {{ order_id }}" and body["html"] is None
    assert body["text"] == WELCOME["text"] and body["name"] == "welcome"
    assert body["variables"] == ["code", "order_id", "user"]
    assert body["updated_at"] >= created["updated_at"]
    assert (await http.get(url, headers=h(account))).json() == body

    neither = await http.patch(url, json={"text": None}, headers=h(account))
    assert neither.status_code == 422
    assert "html or text" in neither.json()["detail"]
    no_subject = await http.patch(url, json={"subject": None}, headers=h(account))
    assert no_subject.status_code == 422 and "subject" in no_subject.json()["detail"]


async def test_delete(http: httpx.AsyncClient, account: dict[str, str]) -> None:
    created = await create(http, account)
    url = f"/v1/templates/{created['id']}"
    deleted = await http.delete(url, headers=h(account))
    assert deleted.json() == {"id": created["id"], "deleted": True}
    assert (await http.get(url, headers=h(account))).status_code == 404
    assert (await http.delete(url, headers=h(account))).status_code == 404


@pytest.mark.parametrize(
    ("field", "source", "where"),
    [
        ("html", "<p>\n  {% for x in items %}{{ x }}\n{% endfo %}", "line 3, column 4"),
        ("subject", "Hello {{ name }", "line 1, column 15"),
        ("text", "ok\n{{ x|no_such_filter }}", "line 2 (column unknown)"),
    ],
)
async def test_syntax_errors_name_field_line_and_column(
    http: httpx.AsyncClient, account: dict[str, str], field: str, source: str, where: str
) -> None:
    response = await http.post("/v1/templates", json={**WELCOME, field: source}, headers=h(account))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith(f"{field}: template syntax error at {where}: "), detail


async def test_syntax_error_in_vietnamese(http: httpx.AsyncClient, account: dict[str, str]) -> None:
    response = await http.post(
        "/v1/templates",
        json={**WELCOME, "html": "{% if x %}"},
        headers={**h(account), "Content-Language": "vi"},
    )
    assert response.status_code == 422
    assert response.json()["detail"].startswith("html: lỗi cú pháp template tại dòng 1")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "html": "<p>x</p>"}, "subject"),
        ({"name": "x", "subject": "s"}, "html or text"),
        ({"subject": "s", "text": "t"}, "name"),
        ({"name": "x", "subject": "s", "text": "t" * 1_000_001}, "text"),
        ({"name": "x", "subject": "s", "text": "{% include 'a' %}"}, "text"),
    ],
)
async def test_invalid_templates_are_422(
    http: httpx.AsyncClient, account: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = await http.post("/v1/templates", json=body, headers=h(account))
    assert response.status_code == 422
    assert field in response.json()["detail"]


async def test_render_previews_with_escaping_in_html_only(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    created = await create(http, account)
    data = {"user": {"first_name": "Ann <script>"}, "plans": ["A&B", "C"], "code": "<x>"}
    response = await http.post(
        f"/v1/templates/{created['id']}/render",
        json={"data": data},
        headers=h(account, "read_only"),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "subject": "Welcome, Ann <script>!",
        "html": "<h1>Hi Ann &lt;script&gt;</h1><li>A&amp;B</li><li>C</li>",
        "text": "Hi Ann <script>, your code is <x>.",
    }


async def test_render_names_the_missing_variable(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    created = await create(http, account)
    url = f"/v1/templates/{created['id']}/render"
    nothing = await http.post(url, json={"data": {}}, headers=h(account))
    assert nothing.status_code == 422
    assert nothing.json()["detail"].startswith("data: the template variable 'user' is missing")
    partial = await http.post(
        url, json={"data": {"user": {"first_name": "A"}, "plans": []}}, headers=h(account)
    )
    assert partial.status_code == 422
    assert "'code'" in partial.json()["detail"] and "text" in partial.json()["detail"]


@pytest.mark.parametrize(
    "payload",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ '{0.__class__}'.format(x) }}",
        "{{ self._TemplateReference__context }}",
    ],
)
async def test_template_injection_is_refused_cleanly(
    http: httpx.AsyncClient, account: dict[str, str], payload: str
) -> None:
    created = await create(http, account, {"name": "evil", "subject": "s", "text": payload})
    response = await http.post(
        f"/v1/templates/{created['id']}/render", json={"data": {"x": 1}}, headers=h(account)
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("text: the template was refused by the sandbox"), detail
    assert "uid=" not in detail


async def test_a_runaway_template_is_stopped_without_blocking_the_server(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    spin = "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}"
    created = await create(http, account, {"name": "spin", "subject": "s", "text": spin})
    started = time.monotonic()
    render = asyncio.create_task(
        http.post(f"/v1/templates/{created['id']}/render", json={}, headers=h(account))
    )
    await asyncio.sleep(0.2)
    health = await http.get("/healthz")
    answered_while_rendering = not render.done()
    response = await render
    assert health.status_code == 200 and answered_while_rendering
    assert response.status_code == 422
    assert response.json()["detail"] == "text: rendering took longer than 1 s and was stopped"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("permission", ["sending_access", "read_only"])
async def test_only_full_access_changes_templates(
    http: httpx.AsyncClient, account: dict[str, str], permission: str
) -> None:
    created = await create(http, account)
    url = f"/v1/templates/{created['id']}"
    key = h(account, permission)
    assert (await http.post("/v1/templates", json=WELCOME, headers=key)).status_code == 403
    assert (await http.patch(url, json={"name": "n"}, headers=key)).status_code == 403
    assert (await http.delete(url, headers=key)).status_code == 403
    assert (await http.get(url, headers=key)).status_code == 200
    assert (await http.get("/v1/templates", headers=key)).status_code == 200
    rendered = await http.post(
        f"{url}/render",
        json={"data": {"user": {"first_name": "A"}, "plans": [], "code": 1}},
        headers=key,
    )
    assert rendered.status_code == 200


async def test_other_accounts_templates_are_404(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    created = await create(http, account)
    other = await services.accounts.create_account("globex")
    key = {"X-API-KEY": (await services.accounts.create_key(other.id, name="k")).key}
    url = f"/v1/templates/{created['id']}"
    for method, path, body in [
        ("GET", "", None),
        ("PATCH", "", {"name": "mine"}),
        ("DELETE", "", None),
        ("POST", "/render", {"data": {}}),
    ]:
        response = await http.request(method, url + path, headers=key, json=body)
        assert response.status_code == 404, (method, path)
    assert (await http.get("/v1/templates", headers=key)).json()["total"] == 0
    assert (await http.get(url, headers=h(account))).json()["name"] == "welcome"


async def test_the_service_renders_for_the_send_path(
    services: Services, account: dict[str, str], http: httpx.AsyncClient
) -> None:
    created = await create(http, account)
    data = {"user": {"first_name": "Bo"}, "plans": ["x"], "code": 7}
    rendered = await services.templates.render(account["account_id"], created["id"], data)
    assert rendered.subject == "Welcome, Bo!"
    assert rendered.html == "<h1>Hi Bo</h1><li>x</li>"
    assert rendered.text == "Hi Bo, your code is 7."
    with pytest.raises(InvalidRequest) as missing:
        await services.templates.render(account["account_id"], created["id"], {})
    assert missing.value.code == "template_variable_missing"
    with pytest.raises(NotFound):
        await services.templates.render(account["account_id"], "tpl_nope", data)
