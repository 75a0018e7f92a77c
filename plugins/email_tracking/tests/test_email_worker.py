"""The delivery worker (issue 9): retries, failures, exclusive claims, TLS, stopping.

Every server is real: aiosmtpd on 127.0.0.1 that accepts or refuses
(``451``, ``550``), a socket that drops every connection, a closed port.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import smtp_server
from crmkit_email_tracking import outbox
from crmkit_email_tracking.tables import KEYS, OUTBOX
from smtp_server import Dropper, MailServer, World, closed_port, make_world, outbox_rows, queue
from sqlalchemy import update

from crmkit import DeploymentError

# the shared fixtures (smtp_server.py)
crmkit_plugins = smtp_server.crmkit_plugins
mail_server = smtp_server.mail_server
reopen = smtp_server.reopen
mail_crm = smtp_server.mail_crm
world = smtp_server.world

ON_POSTGRES = os.environ.get("CRMKIT_TEST_DATABASE", "sqlite").lower() in (
    "postgresql",
    "postgres",
    "pg",
)


def _seconds(delta: dt.timedelta) -> float:
    return delta.total_seconds()


def test_temporary_refusal_is_retried_with_backoff(reopen: Any, mail_server: MailServer) -> None:
    crm = reopen(mail_server.port, backoff=10, max_attempts=5)
    world = make_world(crm)
    (message,) = queue(crm, world)
    mail_server.refusals.extend(["451 4.3.0 try later", "452 4.2.2 mailbox full"])

    before = dt.datetime.now(dt.UTC)
    (first,) = outbox.run_worker(crm, once=True)
    assert (first.status, first.attempts, first.reply) == ("retry", 1, "451 4.3.0 try later")
    (row,) = outbox_rows(crm)
    assert (row.status, row.attempts, row.last_error) == ("queued", 1, "451 4.3.0 try later")
    assert row.claimed_by is None
    assert 10 <= _seconds(row.send_at - before) < 12  # backoff_seconds
    assert outbox.run_worker(crm, once=True) == []  # not due yet

    (second,) = outbox.run_once(crm, now=row.send_at + dt.timedelta(seconds=1))
    assert (second.status, second.attempts) == ("retry", 2)
    (row,) = outbox_rows(crm)
    assert 20 <= _seconds(row.send_at - before) < 23  # doubled
    assert row.last_error == "452 4.2.2 mailbox full"

    (third,) = outbox.run_once(crm, now=row.send_at + dt.timedelta(seconds=1))
    assert third.status == "sent"
    (row,) = outbox_rows(crm)
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)
    assert (
        len(mail_server.messages) == 1
        and row.rfc_message_id == (mail_server.messages[0]["Message-ID"])
    )
    assert mail_server.refused == ["451 4.3.0 try later", "452 4.2.2 mailbox full"]
    assert message.id == row.id


def test_backoff_is_capped_at_an_hour(reopen: Any, mail_server: MailServer) -> None:
    crm = reopen(mail_server.port, backoff=3000, max_attempts=5)
    world = make_world(crm)
    queue(crm, world)
    mail_server.refusals.extend(["421 4.7.0 busy"] * 2)
    outbox.run_worker(crm, once=True)
    (row,) = outbox_rows(crm)
    before = dt.datetime.now(dt.UTC)
    outbox.run_once(crm, now=row.send_at + dt.timedelta(seconds=1))
    (row,) = outbox_rows(crm)
    assert 3590 <= _seconds(row.send_at - before) <= 3601  # 6000 s, capped


def test_gives_up_after_max_attempts(reopen: Any, mail_server: MailServer) -> None:
    crm = reopen(mail_server.port, backoff=0, max_attempts=2)
    world = make_world(crm)
    queue(crm, world)
    mail_server.refusals.extend(["451 4.3.0 try later"] * 5)
    assert [o.status for o in outbox.run_worker(crm, once=True)] == ["retry"]
    (last,) = outbox.run_worker(crm, once=True)
    assert last.status == "failed"
    (row,) = outbox_rows(crm)
    assert (row.status, row.attempts) == ("failed", 2)
    assert row.last_error == "451 4.3.0 try later (gave up after 2 attempts)"
    assert outbox.run_worker(crm, once=True) == [] and mail_server.messages == []


@pytest.mark.parametrize("at", ["RCPT", "DATA"])
def test_permanent_refusal_fails_at_once(reopen: Any, at: str) -> None:
    with MailServer(refuse_at=at) as server:
        crm = reopen(server.port)
        world = make_world(crm)
        queue(crm, world)
        server.refusals.append("550 5.1.1 no such user")
        (outcome,) = outbox.run_worker(crm, once=True)
    assert (outcome.status, outcome.reply) == ("failed", "550 5.1.1 no such user")
    (row,) = outbox_rows(crm)
    assert (row.status, row.attempts, row.last_error) == ("failed", 1, "550 5.1.1 no such user")
    assert row.interaction_id is None and row.sent_at is None
    with crm.session() as s:
        assert s.interactions.list(client_id=world.client_id) == []


def test_dropped_connection_is_retried(reopen: Any) -> None:
    with Dropper() as dropper:
        crm = reopen(dropper.port)
        world = make_world(crm)
        queue(crm, world)
        (outcome,) = outbox.run_worker(crm, once=True)
    assert outcome.status == "retry" and dropper.accepted == 1
    (row,) = outbox_rows(crm)
    assert row.status == "queued" and row.attempts == 1
    assert row.last_error.startswith("connection dropped")


def test_refused_connection_is_retried_then_delivered(reopen: Any, tmp_path: Any) -> None:
    port = closed_port()
    crm = reopen(port, backoff=0)
    world = make_world(crm)
    queue(crm, world)
    (outcome,) = outbox.run_worker(crm, once=True)
    assert outcome.status == "retry"
    assert outbox_rows(crm)[0].last_error.startswith(f"cannot reach 127.0.0.1:{port}")
    with MailServer() as server:
        crm2 = reopen(server.port)
        assert [o.status for o in outbox.run_worker(crm2, once=True)] == ["sent"]
    assert len(server.messages) == 1


def test_claims_are_exclusive_and_stale_claims_retaken(mail_crm: Any, world: World) -> None:
    crm = mail_crm
    ids = [m.id for m in queue(crm, world, 3)]
    assert outbox.claim(crm, "w1", 10) == ids
    assert outbox.claim(crm, "w2", 10) == []
    rows = outbox_rows(crm)
    assert {(r.status, r.claimed_by) for r in rows} == {("sending", "w1")}
    assert all(r.rfc_message_id for r in rows)
    # w1 died: after claim_minutes (1) another worker takes them over, Message-IDs kept
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
    assert outbox.claim(crm, "w3", 10, now=later) == ids
    assert [r.rfc_message_id for r in outbox_rows(crm)] == [r.rfc_message_id for r in rows]
    assert outbox.deliver(crm, ids[0], "w1").status == "lost"  # no longer w1's
    outbox.release(crm, ids, "w3")
    assert {(r.status, r.claimed_by) for r in outbox_rows(crm)} == {("queued", None)}


def _race(crms: list[Any], server: MailServer, count: int) -> None:
    """Workers in threads deliver ``count`` queued messages: each exactly once."""
    barrier = threading.Barrier(len(crms))
    results: list[list[Any]] = [[] for _ in crms]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            barrier.wait()
            results[index] = outbox.run_worker(
                crms[index], once=True, limit=3, worker_id=f"w{index}"
            )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(crms))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    outcomes = [o for batch in results for o in batch]
    assert sorted(o.message_id for o in outcomes) == sorted(r.id for r in outbox_rows(crms[0]))
    assert {o.status for o in outcomes} == {"sent"}
    ids = [m["Message-ID"] for m in server.messages]
    assert len(ids) == count and len(set(ids)) == count
    rows = outbox_rows(crms[0])
    assert {r.status for r in rows} == {"sent"} and sorted(ids) == sorted(
        r.rfc_message_id for r in rows
    )
    assert sum(1 for batch in results if batch) >= 2  # the work was shared
    with crms[0].session() as s:
        assert len(s.interactions.list(client_id=rows[0].client_id)) == count


@pytest.mark.skipif(ON_POSTGRES, reason="the SQLite variant (conditional UPDATE)")
def test_concurrent_workers_send_each_message_once_sqlite(
    reopen: Any, mail_server: MailServer
) -> None:
    crms = [reopen(mail_server.port) for _ in range(3)]
    world = make_world(crms[0])
    queue(crms[0], world, 24)
    _race(crms, mail_server, 24)


@pytest.mark.skipif(not ON_POSTGRES, reason="needs CRMKIT_TEST_DATABASE=postgresql")
def test_concurrent_workers_send_each_message_once_postgresql(
    reopen: Any, mail_server: MailServer
) -> None:
    crms = [reopen(mail_server.port) for _ in range(4)]
    assert crms[0].engine.dialect.name == "postgresql"
    world = make_world(crms[0])
    queue(crms[0], world, 40)
    _race(crms, mail_server, 40)


def test_starttls_and_login(reopen: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = smtp_server.self_signed(tmp_path)
    if cert is None:
        pytest.skip("no openssl command to make a certificate")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the worker trusts the test certificate
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret")
    holder: dict[str, MailServer] = {}
    server = MailServer(
        tls_context=context,
        require_starttls=True,
        authenticator=lambda *a: holder["server"].authenticator(*a),
        auth_require_tls=True,
    )
    holder["server"] = server
    with server:
        crm = reopen(
            server.port,
            security="starttls",
            extra="",
            smtp_extra='username = "sales"\npassword_env = "TEST_SMTP_PASSWORD"\n',
        )
        world = make_world(crm)
        queue(crm, world)
        (outcome,) = outbox.run_worker(crm, once=True)
    assert outcome.status == "sent", outcome
    assert server.logins == [("sales", "s3cret")] and len(server.messages) == 1


def test_implicit_tls(reopen: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = smtp_server.self_signed(tmp_path)
    if cert is None:
        pytest.skip("no openssl command to make a certificate")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with MailServer(ssl_context=context) as server:
        crm = reopen(server.port, security="tls")
        queue(crm, make_world(crm))
        (outcome,) = outbox.run_worker(crm, once=True)
    assert outcome.status == "sent", outcome
    assert len(server.messages) == 1


def test_untrusted_certificate_is_retried(
    reopen: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = smtp_server.self_signed(tmp_path)
    if cert is None:
        pytest.skip("no openssl command to make a certificate")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # the system's CAs: not ours
    with MailServer(tls_context=context, require_starttls=True) as server:
        crm = reopen(server.port, security="starttls")
        queue(crm, make_world(crm))
        (outcome,) = outbox.run_worker(crm, once=True)
    assert outcome.status == "retry" and outcome.reply.startswith("TLS failed")
    assert server.messages == []


def test_missing_password_variable_stops_the_worker(
    reopen: Any, mail_server: MailServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_SMTP_PASSWORD", raising=False)
    crm = reopen(
        mail_server.port, smtp_extra='username = "sales"\npassword_env = "TEST_SMTP_PASSWORD"\n'
    )
    world = make_world(crm)
    queue(crm, world)
    with pytest.raises(DeploymentError) as err:
        outbox.run_worker(crm, once=True)
    assert "TEST_SMTP_PASSWORD" in err.value.message
    assert outbox_rows(crm)[0].status == "queued"  # not claimed


def test_no_signing_key_is_a_clear_error(mail_crm: Any, world: World, invoke: Any) -> None:
    with mail_crm.connect() as conn:  # every key deleted (the migration makes the first)
        conn.execute(mail_crm.metadata.tables[KEYS].delete())
    result = invoke("email", "send", world.client_id, "-t", "intro", as_user="anna")
    assert result.exit_code == 6, result
    assert "crmkit email keys rotate" in result.stderr
    assert outbox_rows(mail_crm) == []


def test_interaction_falls_back_when_the_sender_is_deactivated(
    mail_crm: Any, mail_server: MailServer, world: World
) -> None:
    queue(mail_crm, world)
    with mail_crm.session() as s:
        s.users.deactivate("anna", reassign_to="admin", note="left")
    (outcome,) = outbox.run_worker(mail_crm, once=True)
    assert outcome.status == "sent" and outcome.interaction_id is not None
    with mail_crm.session() as s:
        interaction = s.interactions.get(outcome.interaction_id)
    assert interaction.kind == "email" and interaction.client_id == world.client_id


# -- the command line and stopping --------------------------------------------------------
def test_cli_worker_reports_each_message(reopen: Any, mail_server: MailServer, invoke: Any) -> None:
    crm = reopen(mail_server.port, backoff=30)
    world = make_world(crm)
    a, b = queue(crm, world, 2)
    mail_server.refusals.append("451 4.3.0 try later")
    result = invoke("email", "worker", "--once")
    assert result.exit_code == 0, result
    assert f"retry #{a.id} to buy@acme.example (attempt 1; next at " in result.output
    assert "): 451 4.3.0 try later" in result.output
    assert f"sent #{b.id} to buy@acme.example" in result.output
    assert "1 sent, 1 to retry, 0 failed" in result.output
    with crm.connect() as conn:
        table = crm.metadata.tables[OUTBOX]
        conn.execute(update(table).values(send_at=dt.datetime.now(dt.UTC)))
    mail_server.refusals.append("550 5.1.1 no such user")
    result = invoke("email", "worker", "--once", json=True)
    assert result.exit_code == 0, result
    assert [(o["message_id"], o["status"]) for o in result.json] == [(a.id, "failed")]
    assert result.json[0]["reply"] == "550 5.1.1 no such user"


def test_run_worker_stops_when_asked(mail_crm: Any, mail_server: MailServer, world: World) -> None:
    stop = threading.Event()
    done: list[Any] = []
    thread = threading.Thread(
        target=lambda: done.extend(outbox.run_worker(mail_crm, poll=0.05, stop=stop))
    )
    thread.start()
    queue(mail_crm, world)
    deadline = time.monotonic() + 10
    while not mail_server.messages and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert [o.status for o in done] == ["sent"]


@pytest.mark.slow
def test_worker_process_stops_on_sigterm(
    mail_crm: Any, mail_server: MailServer, world: World
) -> None:
    queue(mail_crm, world)
    env = {k: v for k, v in os.environ.items() if k != "CRMKIT_LOAD_PLUGINS"}
    env["CRMKIT_DEBUG"] = "1"
    env["PYTHONUNBUFFERED"] = "1"  # each line as it is printed
    proc = subprocess.Popen(
        [sys.executable, "-m", "crmkit", "-C", str(mail_crm.config.root), "email", "worker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("sent #1 to buy@acme.example"), (line, proc.stderr.read())
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "1 sent, 0 to retry, 0 failed" in err
    assert len(mail_server.messages) == 1


def test_worker_outlives_a_database_outage(
    mail_crm: Any, mail_server: MailServer, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crmkit import DatabaseError

    queue(mail_crm, world)
    real_claim = outbox.claim
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> list[int]:
        calls.append(1)
        if len(calls) == 1:
            raise DatabaseError("the database is restarting")
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(outbox, "claim", flaky)
    stop = threading.Event()
    errors: list[Any] = []

    def sent(outcome: Any) -> None:
        stop.set()

    done = outbox.run_worker(
        mail_crm, poll=0.05, stop=stop, on_outcome=sent, on_error=errors.append
    )
    assert [str(e) for e in errors] == ["the database is restarting"]
    assert [o.status for o in done] == ["sent"] and len(mail_server.messages) == 1
