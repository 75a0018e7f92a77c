"""Client cards and contacts through the Python API."""

from __future__ import annotations

import datetime as dt

import pytest

import crmkit
from crmkit import ClientKind, DuplicateError, NotFound, Segment, ValidationError, hookimpl


class SegmentPlugin:
    """A segment with a primary field and a range, as a plugin would register it."""

    @hookimpl
    def crmkit_segments(self) -> list[Segment]:
        return [
            Segment(
                name="shop",
                title="Shop",
                schema={
                    "type": "object",
                    "properties": {
                        "area": {"type": "number", "minimum": 0},
                        "city": {"type": "string"},
                    },
                    "required": ["area"],
                    "additionalProperties": False,
                },
            )
        ]


@pytest.fixture
def crmkit_plugins() -> list[object]:
    return [SegmentPlugin()]


def test_create_and_get_client(session):
    acme = session.clients.create(
        "Acme Ltd",
        email="Buy@ACME.example",
        phone="+1 555 0100",
        requisites={"tax_id": "7701234567"},
        source="website",
        external_id="ext-1",
    )
    assert acme.id > 0
    got = session.clients.get(acme.id)
    assert got == acme
    assert got.email == "Buy@acme.example"  # the domain part is case-folded
    assert got.owner == "admin" and got.owner_id == session.user.id
    assert got.kind is ClientKind.COMPANY
    assert got.requisites == {"tax_id": "7701234567"}
    assert got.created_at.tzinfo is not None


def test_client_timestamps_are_utc(session):
    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    client = session.clients.create("Old client", created_at=when)
    assert client.created_at == when
    assert client.created_at.utcoffset() == dt.timedelta(0)


def test_duplicate_email_is_case_insensitive_and_names_the_existing_client(session):
    first = session.clients.create("Acme", email="sales@acme.example")
    with pytest.raises(DuplicateError) as err:
        session.clients.create("Acme again", email="SALES@Acme.Example")
    assert err.value.field == "email"
    assert err.value.existing_id == first.id
    assert f"#{first.id}" in str(err.value) and "Acme" in str(err.value)
    assert session.clients.count() == 1


def test_duplicate_external_id(session):
    first = session.clients.create("A", external_id="1C-42")
    with pytest.raises(DuplicateError) as err:
        session.clients.create("B", external_id="1C-42")
    assert err.value.existing_id == first.id and err.value.field == "external_id"


def test_update_cannot_create_a_duplicate(session):
    session.clients.create("A", email="a@x.example")
    b = session.clients.create("B", email="b@x.example")
    with pytest.raises(DuplicateError):
        session.clients.update(b.id, email="A@X.example")
    assert session.clients.get(b.id).email == "b@x.example"


def test_all_problems_reported_at_once(session):
    with pytest.raises(ValidationError) as err:
        session.clients.create("", email="not-an-email", kind="robot", source="nowhere")
    fields = {p.field for p in err.value.problems}
    assert fields == {"name", "email", "kind", "source"}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"email": "a@b"}, "email"),
        ({"email": "two@@x.example"}, "email"),
        ({"phone": "call me"}, "phone"),
        ({"segment": "nope"}, "segment"),
        ({"owner": "ghost"}, "owner"),
        ({"requisites": {"tax_id": ["x"]}}, "requisites.tax_id"),
        ({"params": "x"}, "params"),
    ],
)
def test_bad_fields_are_named(session, kwargs, field):
    with pytest.raises((ValidationError, NotFound)) as err:
        session.clients.create("Acme", **kwargs)
    assert (
        field in {p.field for p in err.value.problems}
        if hasattr(err.value, "problems")
        else (err.value.field == field)
    )


def test_segment_parameters_are_validated(session):
    with pytest.raises(ValidationError) as err:
        session.clients.create("Shop", segment="shop", params={"area": -5, "colour": "red"})
    problems = {p.field: p.reason for p in err.value.problems}
    assert "params.area" in problems and "minimum" in problems["params.area"]
    assert problems["params.colour"] == "is not a known parameter"


def test_primary_fields_may_be_missing_on_save(crm, session):
    shop = session.clients.create("Shop", segment="shop", params={"city": "Riga"})
    assert crm.segment("shop").missing(shop.params) == ["area"]
    assert crm.segment("shop").validate(shop.params, complete=True)[0].field == "params.area"


def test_changing_segment_revalidates_params(session):
    client = session.clients.create("Free", params={"floor": "big"})  # fits no segment
    assert client.segment is None
    with pytest.raises(ValidationError) as err:
        session.clients.update(client.id, segment="shop")
    assert err.value.problems[0].field == "params.floor"


def test_update_records_an_event_with_old_and_new(session):
    client = session.clients.create("Acme")
    updated = session.clients.update(client.id, phone="+7 495 000-00-00", name="Acme Ltd")
    assert updated.name == "Acme Ltd" and updated.updated_at >= client.updated_at
    events = session.events("client", client.id)
    assert [e["action"] for e in events] == ["created", "updated"]
    assert events[1]["data"]["name"] == {"old": "Acme", "new": "Acme Ltd"}
    assert events[1]["user"] == "admin"


def test_update_without_change_records_nothing(session):
    client = session.clients.create("Acme")
    assert session.clients.update(client.id, name="Acme") == client
    assert len(session.events("client", client.id)) == 1


def test_list_filters_and_paging(crm, session):
    session.users.add("anna", role="manager")
    for i in range(5):
        session.clients.create(f"Anna {i}", owner="anna", source="website")
    session.clients.create("Mine", segment="shop", params={"area": 10})
    assert [c.name for c in session.clients.list(owner="anna", limit=2)] == ["Anna 4", "Anna 3"]
    assert len(session.clients.list(owner="anna", limit=2, offset=4)) == 1
    assert [c.name for c in session.clients.list(segment="shop")] == ["Mine"]
    assert session.clients.count(source="website") == 5
    assert [c.name for c in session.clients.list(search="ANNA 1")] == ["Anna 1"]
    assert [c.id for c in session.clients.iter(batch_size=2)] == sorted(
        c.id for c in session.clients.list(limit=None)
    )


def test_owner_must_be_active(session):
    session.users.add("gone", role="manager", active=False)
    with pytest.raises(ValidationError) as err:
        session.clients.create("Acme", owner="gone")
    assert err.value.field == "owner"


def test_session_rolls_back_on_error(crm):
    with pytest.raises(RuntimeError), crm.session() as s:
        s.clients.create("Half-written")
        raise RuntimeError("boom")
    with crm.session() as s:
        assert s.clients.count() == 0


def test_contacts(session):
    client = session.clients.create("Acme")
    ivan = session.contacts.add(client.id, "Ivan Petrov", position="CEO", email="ivan@acme.example")
    assert session.contacts.list(client.id) == [ivan]
    with pytest.raises(DuplicateError):
        session.contacts.add(client.id, "Ivan again", email="IVAN@acme.example")
    with pytest.raises(ValidationError) as err:
        session.contacts.add(client.id, " ", phone="?")
    assert {p.field for p in err.value.problems} == {"name", "phone"}
    with pytest.raises(NotFound):
        session.contacts.add(9999, "Nobody")


def test_users_and_nested_teams(session):
    session.teams.add("Sales")
    session.teams.add("North", parent="Sales")
    session.teams.add("South", parent="Sales")
    session.users.add("anna", role="manager", team="North", name="Anna K")
    session.users.add("boris", role="head", team="Sales")
    session.users.add("olga", role="marketer")
    assert [u.login for u in session.users.list(team="Sales")] == ["anna", "boris"]
    assert [u.login for u in session.users.list(team="South")] == []
    assert [u.login for u in session.users.list(role="marketer")] == ["olga"]
    with pytest.raises(DuplicateError):
        session.users.add("anna", role="manager")
    with pytest.raises(ValidationError) as err:
        session.users.add("Bad Login", role="wizard", team="Nowhere")
    assert {p.field for p in err.value.problems} == {"login", "role", "team"}
    boris = session.users.update("boris", active=False)
    assert boris.active is False


def test_only_admins_manage_users(crm):
    with crm.session() as s:
        s.users.add("anna", role="manager")
    with crm.session("anna") as s, pytest.raises(crmkit.PermissionDenied):
        s.users.add("eve", role="admin")


def test_deactivated_user_cannot_open_a_session(crm):
    with crm.session() as s:
        s.users.add("anna", role="manager", active=False)
    with pytest.raises(crmkit.DeploymentError), crm.session("anna"):
        pass
    with pytest.raises(NotFound), crm.session("nobody"):
        pass


def test_to_json_round_trip(session):
    from crmkit.core.model import Client, from_json, to_json

    client = session.clients.create("Acme", params={"a": [1, 2]})
    data = to_json(client)
    assert data["kind"] == "company" and isinstance(data["created_at"], str)
    assert from_json(data, Client) == client


def test_concurrent_creates_of_the_same_email_make_one_client(crm):
    """Two sessions race to create the same client: one wins, the other gets DuplicateError."""
    import threading

    outcome: list[object] = []

    def second() -> None:
        try:
            with crm.session() as s:
                s.clients.create("Acme (second)", email="race@acme.example")
            outcome.append("created")
        except crmkit.CrmError as exc:
            outcome.append(exc)

    with crm.session() as s:
        s.clients.create("Acme", email="race@acme.example")
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.5)  # the second session waits for this one to commit
    thread.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], DuplicateError), outcome
    with crm.session(readonly=True) as s:
        assert [c.name for c in s.clients.list()] == ["Acme"]


def test_non_finite_numbers_and_unknown_parameters_are_named(session):
    with pytest.raises(ValidationError) as err:
        session.clients.create(
            "Shop", segment="shop", params={"area": float("nan"), "fax": "1", "colour": "red"}
        )
    problems = {p.field: p.reason for p in err.value.problems}
    assert problems["params.area"] == "must be a finite number"
    assert problems["params.fax"] == "is not a known parameter"
    assert problems["params.colour"] == "is not a known parameter"


def test_cli_values_nan_and_infinity_stay_text():
    from crmkit.core.validation import parse_value

    assert parse_value("NaN") == "NaN" and parse_value("-Infinity") == "-Infinity"
    assert parse_value("1e3") == 1000.0 and parse_value("[1, 2]") == [1, 2]
