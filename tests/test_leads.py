"""Web lead capture: ``POST /api/leads`` on a real uvicorn server, and ``crmkit lead key``.

The deployments are the ``crm`` fixture's, so the module runs on SQLite
and, with ``CRMKIT_TEST_DATABASE=postgresql``, on PostgreSQL.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("starlette", reason="pip install -e '.[server]'")
pytest.importorskip("uvicorn", reason="pip install -e '.[server]'")

from sqlalchemy import select

from crmkit import CRM, ConfigError
from crmkit.plugins.leads_impl import KEY_PREFIX, RateLimiter, hash_key, parse
from crmkit.server import create_app
from crmkit.testing_server import Reply, request, serve_app


def configure(crm: CRM, text: str) -> CRM:
    """The deployment reopened with ``text`` appended to its crmkit.toml."""
    path = crm.config.root / "crmkit.toml"
    path.write_text(path.read_text("utf-8") + "\n" + text, "utf-8")
    return CRM.open(crm.config.root, plugins=crm.plugins)


def make_key(crm: CRM, name: str = "website") -> str:
    from crmkit.plugins.leads_impl import LeadKeys

    with crm.session() as s:
        secret, _ = LeadKeys(s).create(name)
    return secret


@pytest.fixture
def key(crm: CRM) -> str:
    return make_key(crm)


@pytest.fixture
def url(crm: CRM) -> Iterator[str]:
    with serve_app(create_app(crm, access_log=False)) as base:
        yield base


def post(url: str, key: str | None, data: dict[str, Any], *, query: str = "") -> Reply:
    headers = {} if key is None else {"X-API-Key": key}
    return request(f"{url}/api/leads{query}", method="POST", headers=headers, json=data)


def post_form(url: str, fields: dict[str, str], *, query: str = "") -> Reply:
    return request(
        f"{url}/api/leads{query}",
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=urllib.parse.urlencode(fields),
    )


def clients(crm: CRM) -> list[Any]:
    with crm.session(readonly=True) as s:
        return list(s.clients.list())


def lead_events(crm: CRM) -> list[dict[str, Any]]:
    with crm.connect(readonly=True) as conn:
        events = crm.metadata.tables["events"]
        rows = conn.execute(
            select(events.c.entity_id, events.c.data)
            .where(events.c.action == "lead_captured")
            .order_by(events.c.id)
        )
        return [{"client_id": r.entity_id, **r.data} for r in rows]


# -- capture ---------------------------------------------------------------------------------
def test_a_json_lead_creates_a_client(crm: CRM, key: str, url: str) -> None:
    reply = post(
        url,
        key,
        {
            "name": "Anna Petrova",
            "email": "Anna@Vostok.example",
            "phone": "+7 495 123-45-67",
            "company": "Vostok Trade",
            "message": "Please call me about a bulk order",
        },
    )
    assert reply.status == 201, reply.text
    body = reply.json()
    assert body["created"] is True
    [client] = clients(crm)
    assert body == {"client_id": client.id, "created": True}
    assert (client.name, client.kind, client.email, client.phone) == (
        "Vostok Trade",
        "company",
        "Anna@vostok.example",
        "+7 495 123-45-67",
    )
    assert client.source == "website"  # no UTM tags: the website's own form
    assert client.owner_id is not None
    with crm.session(readonly=True) as s:
        assert s.users.get(client.owner_id).login == crm.config.admin
        [contact] = s.contacts.list(client.id)
        assert (contact.name, contact.email) == ("Anna Petrova", "Anna@vostok.example")
    [event] = lead_events(crm)
    assert event["client_id"] == client.id
    assert event["created"] is True
    assert event["lead"]["message"] == "Please call me about a bulk order"
    assert "api_key" not in event["lead"]


def test_a_form_post_with_the_key_as_a_field(crm: CRM, key: str, url: str) -> None:
    reply = post_form(url, {"api_key": key, "name": "Boris", "phone": "+7 999 000-11-22"})
    assert reply.status == 201, reply.text
    [client] = clients(crm)
    assert (client.name, client.kind, client.phone, client.email) == (
        "Boris",
        "person",
        "+7 999 000-11-22",
        None,
    )


def test_a_multipart_form_post(crm: CRM, key: str, url: str) -> None:
    parts = {"api_key": key, "name": "Vera", "email": "vera@example.org"}
    body = "".join(
        f'--BOUNDARY\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in parts.items()
    )
    body += (
        '--BOUNDARY\r\nContent-Disposition: form-data; name="cv"; filename="cv.txt"\r\n'
        "Content-Type: text/plain\r\n\r\nignored\r\n--BOUNDARY--\r\n"
    )
    reply = request(
        f"{url}/api/leads",
        method="POST",
        headers={"Content-Type": "multipart/form-data; boundary=BOUNDARY"},
        body=body,
    )
    assert reply.status == 201, reply.text
    [client] = clients(crm)
    assert (client.name, client.email) == ("Vera", "vera@example.org")


def test_dedupe_by_email_is_case_insensitive_and_fills_only_missing_fields(
    crm: CRM, key: str, url: str
) -> None:
    with crm.session() as s:
        s.users.add("anna", role="manager")
        existing = s.clients.create(
            "Acme", email="Buy@Acme.example", owner="anna", source="referral"
        )
    reply = post(
        url, key, {"name": "Someone else", "email": "BUY@acme.EXAMPLE", "phone": "+1 555 010 0001"}
    )
    assert reply.status == 200, reply.text
    assert reply.json() == {"client_id": existing.id, "created": False}
    [client] = clients(crm)
    assert client.name == "Acme"  # kept
    assert client.source == "referral"  # kept
    assert client.phone == "+1 555 010 0001"  # was missing: filled
    with crm.session(readonly=True) as s:
        assert s.users.get(client.owner_id).login == "anna"  # kept
    reply = post(url, key, {"email": "buy@acme.example", "phone": "+1 555 010 0002"})
    assert reply.json() == {"client_id": existing.id, "created": False}
    assert clients(crm)[0].phone == "+1 555 010 0001"  # never overwritten
    assert [e["created"] for e in lead_events(crm)] == [False, False]


def test_lead_user_owns_new_clients(crm: CRM) -> None:
    with crm.session() as s:
        s.users.add("marketer", role="manager")
    opened = configure(crm, '[automation]\nlead_user = "marketer"\n')
    secret = make_key(opened)
    with serve_app(create_app(opened, access_log=False)) as url:
        reply = post(url, secret, {"email": "new@lead.example"})
    assert reply.status == 201, reply.text
    with opened.session(readonly=True) as s:
        client = s.clients._fetch(reply.json()["client_id"])
        assert s.users.get(client.owner_id).login == "marketer"
    opened.close()


# -- UTM --------------------------------------------------------------------------------------
def test_utm_tags_map_to_channels(crm: CRM, key: str, url: str) -> None:
    cases = [
        ({"utm_source": "google", "utm_medium": "cpc"}, "", "advertising"),
        ({}, "?utm_source=yandex&utm_medium=CPC&utm_campaign=autumn", "advertising"),
        ({"utm_source": "vk", "utm_medium": "post"}, "", "social"),
        ({"utm_source": "mailchimp", "utm_medium": "email"}, "", "email_campaign"),
        ({"utm_source": "somewhere", "utm_medium": "unknown"}, "", "website"),
    ]
    for i, (tags, query, channel) in enumerate(cases):
        reply = post(url, key, {"email": f"lead{i}@utm.example", **tags}, query=query)
        assert reply.status == 201, reply.text
        with crm.session(readonly=True) as s:
            assert s.clients._fetch(reply.json()["client_id"]).source == channel, (tags, query)
    events = lead_events(crm)
    assert events[1]["lead"]["utm_campaign"] == "autumn"
    assert events[1]["channel"] == "advertising"


def test_utm_channels_are_configurable(crm: CRM) -> None:
    opened = configure(
        crm,
        '[plugin.leads]\nutm_channels = { "google/cpc" = "partner", "*/banner" = "event" }\n'
        'default_channel = ""\n',
    )
    secret = make_key(opened)
    with serve_app(create_app(opened, access_log=False)) as url:
        a = post(url, secret, {"email": "a@x.example", "utm_source": "google", "utm_medium": "cpc"})
        b = post(url, secret, {"email": "b@x.example", "utm_source": "bing", "utm_medium": "cpc"})
        c = post(url, secret, {"email": "c@x.example", "utm_medium": "banner"})
        d = post(url, secret, {"email": "d@x.example"})
    with opened.session(readonly=True) as s:
        found = [s.clients._fetch(r.json()["client_id"]).source for r in (a, b, c, d)]
    assert found == ["partner", "advertising", "event", None]
    opened.close()


def test_settings_are_checked_at_startup(crm: CRM) -> None:
    channels = set(crm.channels)
    with pytest.raises(ConfigError) as exc:
        parse({"utm_channels": {"google/cpc": "billboards"}}, channels)
    assert exc.value.field == "plugin.leads.utm_channels.google/cpc"
    assert "unknown channel 'billboards'" in exc.value.message
    with pytest.raises(ConfigError) as exc:
        parse({"per_minute": 0}, channels)
    assert exc.value.field == "plugin.leads.per_minute"
    with pytest.raises(ConfigError) as exc:
        parse({"utm_channels": {"google": "advertising"}}, channels)
    assert exc.value.field.startswith("plugin.leads.utm_channels")
    with pytest.raises(ConfigError) as exc:
        parse({"honeypot_field": "x"}, channels)
    assert exc.value.field == "plugin.leads.honeypot_field"
    with pytest.raises(ConfigError) as exc:
        configure(crm, "[plugin.leads]\ndefault_channel = 'nowhere'\n")
    assert exc.value.field == "plugin.leads.default_channel"


# -- spam and limits --------------------------------------------------------------------------
def test_a_filled_honeypot_is_answered_but_stores_nothing(crm: CRM, key: str, url: str) -> None:
    reply = post(url, key, {"email": "bot@spam.example", "website": "http://spam.example"})
    assert reply.status == 202
    assert reply.json() == {"client_id": None, "created": False}
    reply = post_form(url, {"api_key": key, "email": "not-even-an-email", "website": "x"})
    assert reply.status == 202  # a bot learns nothing from validation either
    assert clients(crm) == []
    assert lead_events(crm) == []
    assert post(url, key, {"email": "human@ok.example", "website": ""}).status == 201


def test_the_honeypot_field_is_configurable(crm: CRM) -> None:
    opened = configure(crm, '[plugin.leads]\nhoneypot = "fax"\n')
    secret = make_key(opened)
    with serve_app(create_app(opened, access_log=False)) as url:
        assert post(url, secret, {"email": "a@x.example", "fax": "123"}).status == 202
        assert post(url, secret, {"email": "b@x.example", "website": "x"}).status == 201
    opened.close()


def test_the_rate_limit_per_ip(crm: CRM) -> None:
    opened = configure(crm, "[plugin.leads]\nper_minute = 3\n")
    secret = make_key(opened)
    with serve_app(create_app(opened, access_log=False)) as url:
        statuses = [post(url, secret, {"email": f"r{i}@x.example"}).status for i in range(3)]
        refused = post(url, secret, {"email": "r9@x.example"})
        bad_key = post(url, "crml_wrong", {"email": "r10@x.example"})
    assert statuses == [201, 201, 201]
    assert refused.status == 429
    assert bad_key.status == 429  # guessing keys counts too
    assert refused.json()["error"] == "HTTPError"
    assert "too many leads" in refused.json()["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    with opened.session(readonly=True) as s:
        assert s.clients.count() == 3
    opened.close()


def test_the_token_bucket_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert [limiter.take("a"), limiter.take("a")] == [0.0, 0.0]
    assert limiter.take("a") == pytest.approx(30.0)
    assert limiter.take("b") == 0.0  # per address
    now[0] = 30.0
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0


def test_a_missing_wrong_or_revoked_key_is_a_401(crm: CRM, key: str, url: str) -> None:
    from crmkit.plugins.leads_impl import LeadKeys

    replies = [
        post(url, None, {"email": "a@x.example"}),
        post(url, "crml_nope", {"email": "a@x.example"}),
        post_form(url, {"api_key": "not a key", "email": "a@x.example"}),
    ]
    with crm.session() as s:
        LeadKeys(s).revoke(LeadKeys(s).list()[0].id)
    replies.append(post(url, key, {"email": "a@x.example"}))
    bodies = [r.json() for r in replies]
    assert [r.status for r in replies] == [401] * 4
    assert all(b == bodies[0] for b in bodies)  # no hint which
    assert bodies[0]["field"] == "api_key"
    assert bodies[0]["error"] == "PermissionDenied"
    assert clients(crm) == []


def test_an_oversized_body_is_a_413(crm: CRM, key: str, url: str) -> None:
    reply = post(url, key, {"email": "a@x.example", "message": "x" * 20_000})
    assert reply.status == 413
    assert reply.json() == {
        "error": "HTTPError",
        "field": "body",
        "message": "the body is larger than 16384 bytes",
    }
    assert clients(crm) == []


def test_bad_fields_are_a_422_naming_the_field(crm: CRM, key: str, url: str) -> None:
    reply = post(url, key, {"name": "X", "email": "not-an-email"})
    assert reply.status == 422
    assert reply.json()["field"] == "email"
    assert "not a valid email address" in reply.json()["message"]
    reply = post(url, key, {"email": "ok@x.example", "phone": "call me maybe"})
    assert (reply.status, reply.json()["field"]) == (422, "phone")
    reply = post(url, key, {"name": "Nobody"})
    assert (reply.status, reply.json()["field"]) == (422, "email")
    assert "an email or a phone" in reply.json()["message"]
    reply = post(url, key, {"email": ["a@x.example"]})
    assert (reply.status, reply.json()["field"]) == (422, "email")
    reply = request(
        f"{url}/api/leads",
        method="POST",
        headers={"Content-Type": "application/json", "X-API-Key": key},
        body="{not json",
    )
    assert (reply.status, reply.json()["field"]) == (422, "body")
    reply = request(
        f"{url}/api/leads",
        method="POST",
        headers={"Content-Type": "text/plain", "X-API-Key": key},
        body="email=a@x.example",
    )
    assert (reply.status, reply.json()["field"]) == (422, "content-type")
    assert clients(crm) == []


def test_only_post(url: str) -> None:
    reply = request(f"{url}/api/leads")
    assert reply.status == 405


# -- automation ---------------------------------------------------------------------------------
RULE = """
[automation.rules.call_new_lead]
event = "lead.captured"
when = { properties = { created = { const = true } } }
actions = [
    { do = "create_task", title = "Call the lead {client.name} ({channel})", due = "+1d" },
]
"""


def test_lead_captured_fires_a_rule_once_per_lead(crm: CRM) -> None:
    opened = configure(crm, RULE)
    secret = make_key(opened)
    with serve_app(create_app(opened, access_log=False)) as url:
        first = post(url, secret, {"email": "a@x.example", "name": "Ann", "utm_medium": "cpc"})
        again = post(url, secret, {"email": "A@x.example"})  # the same client: created false
        other = post(url, secret, {"phone": "+7 900 100-20-30"})
    assert [first.status, again.status, other.status] == [201, 200, 201]
    with opened.session(readonly=True) as s:
        tasks = s.tasks.list()
        titles = sorted(t.title for t in tasks)
    assert titles == ["Call the lead +7 900 100-20-30 (website)", "Call the lead Ann (advertising)"]
    with opened.connect(readonly=True) as conn:
        runs = opened.metadata.tables["automation_runs"]
        rows = conn.execute(select(runs.c.rule, runs.c.event, runs.c.event_key)).all()
    assert len(rows) == 2
    assert {r.event for r in rows} == {"lead.captured"}
    assert all(r.event_key.startswith(f"lead:{r.event_key.split(':')[1]}:") for r in rows)
    opened.close()


def test_the_payload_of_lead_captured(crm: CRM) -> None:
    from crmkit.plugins.leads_impl import capture

    seen: list[dict[str, Any]] = []
    opened = configure(
        crm,
        RULE.replace("call_new_lead", "seen").replace(
            "when = { properties = { created = { const = true } } }\n", ""
        ),
    )
    secret = make_key(opened)
    original = opened.automation.fire

    def spy(session: Any, event: str, payload: dict[str, Any], key: str) -> Any:
        seen.append({"event": event, "payload": payload, "key": key})
        return original(session, event, payload, key)

    opened.automation.fire = spy  # type: ignore[method-assign]
    done = capture(
        opened,
        secret,
        {"api_key": secret, "email": "p@x.example", "utm_source": "google", "utm_medium": "cpc"},
        request_id="r1",
    )
    assert done is not None
    [fired] = [e for e in seen if e["event"] == "lead.captured"]
    assert fired["key"] == f"lead:{done['client_id']}:r1"
    payload = fired["payload"]
    assert payload["created"] is True
    assert payload["channel"] == "advertising"
    assert payload["client"]["email"] == "p@x.example"
    assert payload["lead"]["utm_source"] == "google"
    assert "api_key" not in payload["lead"]
    json.dumps(payload)
    opened.close()


# -- the CLI ----------------------------------------------------------------------------------
def test_lead_key_commands(crm: CRM, invoke: Any) -> None:
    made = invoke("lead", "key", "create", "--name", "landing")
    assert made.exit_code == 0, made
    secret = made.output.strip()
    assert secret.startswith(KEY_PREFIX) and len(secret) > 40
    assert "Copy it now" in made.stderr
    with crm.connect(readonly=True) as conn:
        table = crm.metadata.tables["lead_keys"]
        [row] = conn.execute(select(table.c.key_hash, table.c.name)).all()
    assert row.key_hash == hash_key(secret)  # only the hash is stored
    assert secret not in json.dumps([str(v) for v in row])

    listed = invoke("lead", "key", "list", json=True)
    assert listed.exit_code == 0, listed
    [key] = listed.json
    assert (key["name"], key["status"], key["created_by"]) == ("landing", "active", "admin")
    assert "key_hash" not in key and "key" not in key

    with serve_app(create_app(crm, access_log=False)) as url:
        assert post(url, secret, {"email": "a@x.example"}).status == 201
        assert invoke("lead", "key", "list", json=True).json[0]["last_used_at"] is not None
        revoked = invoke("lead", "key", "revoke", str(key["id"]))
        assert revoked.exit_code == 0, revoked
        assert "Revoked lead key" in revoked.output
        assert post(url, secret, {"email": "b@x.example"}).status == 401
    again = invoke("lead", "key", "revoke", str(key["id"]))
    assert again.exit_code == 4
    assert "already revoked" in again.stderr
    missing = invoke("lead", "key", "revoke", "99")
    assert missing.exit_code == 3
    assert invoke("lead", "key", "list", json=True).json[0]["status"] == "revoked"
    made = invoke("lead", "key", "create", json=True)
    assert made.json["key"].startswith(KEY_PREFIX) and made.json["name"] == "website"


def test_only_an_admin_manages_lead_keys(crm: CRM, invoke: Any) -> None:
    with crm.session() as s:
        s.users.add("anna", role="manager")
    for args in (("create",), ("list",), ("revoke", "1")):
        result = invoke("lead", "key", *args, as_user="anna")
        assert result.exit_code == 5, result
        assert "it needs the role admin" in result.stderr
