"""A large deal import drops the funnel's indexes and creates them again, even after a crash."""

from __future__ import annotations

import csv
import datetime as dt
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import inspect, update

from crmkit.core import indexes
from crmkit.core.app import CRM
from crmkit.core.schema import FUNNEL_INDEXES
from crmkit.transfer import importer
from crmkit.transfer.importer import import_file

STAGES = ["qualification", "presentation", "proposal", "contract_invoice", "payment_shipment"]
REASONS = ["price", "competitor", "no_budget"]


def deals_csv(path, rows, start=0):
    """``rows`` b2b deals (external ids D-start ...), 3 to 5 stages each, some lost or won."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(
            ["external_id", "client_external_id", "title", "amount"]
            + [f"stage.{s}" for s in STAGES]
            + ["status", "closed_at", "lost_reason"]
        )
        for i in range(start, start + rows):
            reached = 3 + i % 3
            day = dt.date(2026, 1, 1) + dt.timedelta(days=i % 80)
            dates = []
            for n in range(reached):
                dates.append(day.isoformat())
                day += dt.timedelta(days=(i + n) % 9)
            dates += [""] * (len(STAGES) - reached)
            status = closed = reason = ""
            if i % 4 == 0:
                status, closed, reason = "lost", day.isoformat(), REASONS[i % 3]
            elif reached == 5 and i % 4 == 1:
                status, closed = "won", day.isoformat()
            out.writerow(
                [f"D-{i}", f"C-{i % 3}", f"Deal {i}", 100 + i, *dates, status, closed, reason]
            )
    return path


def present(crm):
    """The funnel indexes that exist."""
    with crm.connect(readonly=True) as conn:
        names = {ix["name"] for ix in inspect(conn).get_indexes("stage_changes")}
    return sorted(names & set(FUNNEL_INDEXES))


def listed(crm):
    return sorted(row.name for row in indexes.listed(crm))


ALL = sorted(FUNNEL_INDEXES)


@pytest.fixture
def clients(crm):
    with crm.session() as s:
        for i in range(3):
            s.clients.create(f"Client {i}", external_id=f"C-{i}")
    return crm


@pytest.fixture
def low_thresholds(monkeypatch):
    """Files of a few hundred deals count as large."""
    monkeypatch.setattr(importer, "DEFER_MIN_CHANGES", 100)
    monkeypatch.setattr(importer, "DEFER_SHARE", 0.25)


def funnel(crm):
    with crm.session(readonly=True) as s:
        result = s.report("funnel", period="2026-Q1", pipeline="b2b")
    return result.rows, result.summary


def test_a_large_import_drops_the_indexes_and_creates_them_again(
    crm_factory, clients, low_thresholds, tmp_path
):
    crm = clients
    source = deals_csv(tmp_path / "deals.csv", 400)
    seen = []

    def progress(result):  # after each batch (committed): what another process would find
        seen.append((result.batches, present(crm), listed(crm)))

    result = import_file(crm, "deals", source, batch_size=50, progress=progress)
    assert (result.inserted, result.rejected, result.batches) == (400, 0, 8)
    assert result.deferred_indexes == list(FUNNEL_INDEXES)
    # dropped after the first batch (which tells how many changes a row makes), listed
    assert seen == [(n, [], ALL) for n in range(1, 9)]
    assert present(crm) == ALL
    assert listed(crm) == []

    # the same figures as the same file imported with the indexes kept
    other = crm_factory(name="other")
    with other.session() as s:
        for i in range(3):
            s.clients.create(f"Client {i}", external_id=f"C-{i}")
    kept = import_file(other, "deals", source, batch_size=50, defer_indexes=False)
    assert kept.deferred_indexes == []
    assert kept.inserted == 400
    rows, summary = funnel(crm)
    assert sum(row["entered"] for row in rows) > 400
    assert (rows, summary) == funnel(other)


def test_a_small_import_and_a_rerun_leave_the_indexes_alone(clients, tmp_path, low_thresholds):
    crm = clients
    source = deals_csv(tmp_path / "deals.csv", 400)
    small = deals_csv(tmp_path / "small.csv", 30, start=1000)
    seen = []

    def progress(result):
        seen.append((present(crm), listed(crm)))

    # 30 deals: the rest of the file after the first batch is under DEFER_MIN_CHANGES
    result = import_file(crm, "deals", small, batch_size=10, progress=progress)
    assert (result.inserted, result.deferred_indexes) == (30, [])
    assert seen == [(ALL, [])] * 3
    import_file(crm, "deals", source, batch_size=50)
    # imported already: the first batch inserts nothing, so nothing is dropped
    seen.clear()
    again = import_file(crm, "deals", source, batch_size=50, progress=progress)
    assert (again.inserted, again.unchanged, again.deferred_indexes) == (0, 400, [])
    assert seen == [(ALL, [])] * 8


def test_the_default_thresholds_keep_the_indexes_for_a_few_thousand_changes(clients, tmp_path):
    crm = clients
    source = deals_csv(tmp_path / "deals.csv", 400)  # about 1,700 changes
    result = import_file(crm, "deals", source, batch_size=50)
    assert result.deferred_indexes == []
    assert importer.DEFER_MIN_CHANGES >= 10_000


def test_an_error_midway_creates_the_indexes_again(clients, tmp_path):
    crm = clients
    source = deals_csv(tmp_path / "deals.csv", 200)

    def progress(result):
        if result.batches == 3:
            assert present(crm) == []
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_file(crm, "deals", source, batch_size=50, defer_indexes=True, progress=progress)
    assert (present(crm), listed(crm)) == (ALL, [])
    # the batches written stay written; running the file again completes it
    rest = import_file(crm, "deals", source, batch_size=50)
    assert (rest.inserted, rest.unchanged) == (50, 150)


KILLER = """
import os, signal, sys
from crmkit.core.app import CRM
from crmkit.transfer.importer import import_file

def progress(result):
    if result.batches == 3:  # indexes dropped, two batches committed: die here
        os.kill(os.getpid(), signal.SIGKILL)

crm = CRM.open(sys.argv[1], entry_points=False)
import_file(crm, "deals", sys.argv[2], batch_size=50, defer_indexes=True, progress=progress)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_an_import_killed_midway_gets_its_indexes_back_at_the_next_session(clients, tmp_path):
    crm = clients
    source = deals_csv(tmp_path / "deals.csv", 300)
    script = tmp_path / "killer.py"
    script.write_text(textwrap.dedent(KILLER), "utf-8")
    done = subprocess.run(
        [sys.executable, str(script), str(crm.config.root), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -9, done.stderr
    # as the crash left it: three batches in, the indexes missing and listed
    assert (present(crm), listed(crm)) == ([], ALL)
    with crm.session(readonly=True) as s:  # reports stay right meanwhile, only slower
        assert sum(row["entered"] for row in s.report("funnel", period="2026-Q1").rows) > 0
    again = CRM.open(crm.config.root, plugins=crm.plugins)
    try:
        warned = pytest.warns(UserWarning, match="import stopped midway")
        with warned, again.session(readonly=True) as s:
            stored = s.connection.exec_driver_sql("SELECT count(*) FROM deals").scalar()
        assert stored == 150
        assert (present(again), listed(again)) == (ALL, [])
        rest = import_file(again, "deals", source, batch_size=50)
        assert (rest.inserted, rest.unchanged) == (150, 150)
    finally:
        again.close()


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_upgrade_repairs_what_a_crash_left(clients):
    crm = clients
    indexes.defer(crm, "stage_changes", FUNNEL_INDEXES)
    t = crm.metadata.tables["deferred_indexes"]
    with crm.connect() as conn:  # as if the process that dropped them had died
        conn.execute(update(t).values(pid=_dead_pid()))
    assert present(crm) == []
    with pytest.warns(UserWarning, match="import stopped midway had dropped: ix_stage"):
        crm.upgrade()
    assert (present(crm), listed(crm)) == (ALL, [])


def test_live_work_keeps_its_indexes_and_a_second_import_does_not_drop_them(
    crm_factory, clients, tmp_path, low_thresholds
):
    crm = clients
    first = indexes.defer(crm, "stage_changes", FUNNEL_INDEXES)  # a live import, this process
    assert first is not None
    # another process's first session: the work is alive, so nothing is repaired
    other = CRM.open(crm.config.root, plugins=crm.plugins)
    try:
        with other.session(readonly=True):
            pass
        assert indexes.repair(other) == []
        assert (present(other), listed(other)) == ([], ALL)
        # a second import at the same time neither drops nor creates them
        result = import_file(other, "deals", deals_csv(tmp_path / "d.csv", 300), batch_size=50)
        assert (result.inserted, result.deferred_indexes) == (300, [])
        assert (present(other), listed(other)) == ([], ALL)
        assert indexes.defer(other, "stage_changes", FUNNEL_INDEXES) is None
    finally:
        other.close()
    assert first.restore() == list(ALL)
    assert (present(crm), listed(crm)) == (ALL, [])
    assert first.restore() == []  # twice: nothing left to do


def test_work_silent_for_longer_than_the_lease_is_repaired(clients):
    crm = clients
    first = indexes.defer(crm, "stage_changes", FUNNEL_INDEXES)
    t = crm.metadata.tables["deferred_indexes"]
    old = dt.datetime.now(dt.UTC) - indexes.LEASE - dt.timedelta(minutes=1)
    with crm.connect() as conn:  # another host's import that stopped beating
        conn.execute(update(t).values(host="elsewhere.example", beat_at=old))
    assert indexes.repair(crm) == sorted(FUNNEL_INDEXES)
    assert (present(crm), listed(crm)) == (ALL, [])
    assert first.restore() == []  # it came back late: the indexes are there already


def test_a_later_import_takes_over_what_a_crash_left(clients, tmp_path, low_thresholds):
    crm = clients
    indexes.defer(crm, "stage_changes", FUNNEL_INDEXES)
    t = crm.metadata.tables["deferred_indexes"]
    with crm.connect() as conn:
        conn.execute(update(t).values(pid=_dead_pid()))
    taken = indexes.defer(crm, "stage_changes", FUNNEL_INDEXES)
    assert taken is not None
    assert {row.owner for row in indexes.listed(crm)} == {taken.owner}
    assert present(crm) == []
    assert taken.restore() == list(ALL)
    assert (present(crm), listed(crm)) == (ALL, [])


def test_all_or_nothing_drops_inside_its_transaction(clients, tmp_path, low_thresholds):
    crm = clients
    source = deals_csv(tmp_path / "deals.csv", 300)
    result = import_file(crm, "deals", source, batch_size=50, on_error="abort")
    assert result.inserted == 300
    sqlite = crm.engine.dialect.name == "sqlite"
    assert result.deferred_indexes == (list(FUNNEL_INDEXES) if sqlite else [])
    assert (present(crm), listed(crm)) == (ALL, [])
    # a bad row in a late batch: all rolled back, the drop too
    bad = deals_csv(tmp_path / "bad.csv", 300, start=1000)
    lines = bad.read_text("utf-8").splitlines()
    lines[-1] = lines[-1].replace("C-", "C-missing-")
    bad.write_text("\n".join(lines) + "\n", "utf-8")
    aborted = import_file(crm, "deals", bad, batch_size=50, on_error="abort")
    assert aborted.aborted
    assert (present(crm), listed(crm)) == (ALL, [])
    with crm.session(readonly=True) as s:
        assert s.connection.exec_driver_sql("SELECT count(*) FROM deals").scalar() == 300


def test_a_database_before_the_table_is_left_alone(clients):
    crm = clients
    with crm.connect() as conn:
        conn.exec_driver_sql("DROP TABLE deferred_indexes")
    assert indexes.listed(crm) == []
    assert indexes.repair(crm) == []


def test_an_import_that_cannot_drop_them_keeps_them(clients, tmp_path, monkeypatch):
    from crmkit.core.errors import DatabaseError

    def locked(*args, **kwargs):
        raise DatabaseError("database is locked")

    monkeypatch.setattr(indexes, "defer", locked)
    source = deals_csv(tmp_path / "deals.csv", 200)
    with pytest.warns(UserWarning, match="kept the funnel's indexes"):
        result = import_file(clients, "deals", source, batch_size=50, defer_indexes=True)
    assert (result.inserted, result.deferred_indexes) == (200, [])
    assert (present(clients), listed(clients)) == (ALL, [])
