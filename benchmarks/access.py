"""A page of clients through the access policies, against the hand-written indexed SQL query.

    python benchmarks/access.py [--rows 1000000] [--managers 50] [--repeat 900]
                                [--database-url URL | --postgres] [--keep DIR] [--check]

Makes a deployment (``CRM.create``, the default policies) with 50 managers in
five teams of a sales department, a head for each team, and N clients owned by
the managers in turn (every 1000th has no owner), inserted with SQLAlchemy
Core ``executemany`` in batches, then ``ANALYZE``. Then measures, in the same
run, a page of 50 clients, newest first, for a manager and for a head:

* **repository**: ``s.clients.list(limit=50)`` in a session as that user: the
  policy engine's condition pushed into the query, the query run, the page
  built (``Client`` objects with the owner's login);
* **pushdown**: the same columns with
  ``select(...).where(s.access.where("read", "client")).order_by(id desc).limit(50)``,
  the condition made afresh for each page;
* **hand-written**: ``SELECT <the same columns> FROM clients c LEFT JOIN users u
  ... WHERE c.owner_id = :me ORDER BY c.id DESC LIMIT 50`` (for the head:
  ``c.owner_id IN (SELECT id FROM users WHERE team_id IN :teams) OR
  c.owner_id = :me``) as ``text()`` on the same connection, with the same
  result types (JSON decoded, times parsed): the query one writes without a
  policy engine;
* **raw cursor**: the same SQL on the driver's own cursor, no SQLAlchemy, the
  values as the driver returns them (for scale);
* **repository, admin**: the admin's page (the admin-all rule: no condition),
  what building a page of ``Client`` objects costs without policies.

Each variant is called ``--repeat`` times, in bursts of 10 calls of one
variant (the first call of a burst is not counted: it pays for what the
previous variant did to the caches), the bursts alternating between the
variants; the figures are medians. It prints the query plan of the engine's
query (the index must be used) and the ratios, then single-record decisions
per second: ``access.allows("read", "client", view)`` and ``access.decide``
over the views of 10,000 different clients, for the manager and the head.

Targets: pushdown / hand-written <= 2.0 and repository / repository, admin
<= 2.0 (the engine adds little to a page: the database filters through the
index, nothing is filtered in Python); allows >= 50,000 decisions/s. With
``--check`` the exit status is 1 when one is missed. SQLite by default;
``--database-url`` for a PostgreSQL database, or ``--postgres`` to start a
throwaway server (``crmkit.testing_postgres``). ``--keep DIR`` keeps the
deployment, and a second run with the same ``--keep`` measures it again
without building it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, insert, select, text

from crmkit.core.app import CRM

TEAMS = 5
SOURCES = ["website", "cold_call", "referral", "event", "partner"]
STAGES = ["lead", "qualified", "customer"]
PAGE = 50
VIEWS = 10_000
PAGE_TARGET = 2.0
DECISIONS_TARGET = 50_000


# -- the deployment -------------------------------------------------------------------------
def build(root: Path, url: str | None, rows: int, managers: int, batch: int) -> CRM:
    """The deployment, its users and ``rows`` clients (Core executemany, in batches)."""
    started = time.perf_counter()
    crm = CRM.create(root, database_url=url, entry_points=False)
    with crm.session() as s:
        s.teams.add("sales")
        for team in range(1, TEAMS + 1):
            s.teams.add(f"team-{team}", parent="sales")
            s.users.add(f"head-{team}", role="head", team=f"team-{team}")
        s.users.add("director", role="head", team="sales")
        s.users.add("newcomer", role="manager", team="team-1")  # owns no client yet
        manager_ids = [
            s.users.add(f"m{m:02d}", role="manager", team=f"team-{m % TEAMS + 1}").id
            for m in range(1, managers + 1)
        ]
    clients = crm.metadata.tables["clients"]
    rng = random.Random(1)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with crm.engine.begin() as conn:
        for start in range(0, rows, batch):
            conn.execute(
                insert(clients),
                [
                    {
                        "kind": "company",
                        "name": f"Client {i}",
                        "email": f"client{i}@example.com",
                        "phone": None,
                        "requisites": {},
                        "segment": None,
                        "params": {},
                        "owner_id": None if i % 1000 == 999 else manager_ids[i % managers],
                        "source": SOURCES[i % len(SOURCES)],
                        "external_id": None,
                        "created_at": now,
                        "updated_at": now,
                        "stage": STAGES[i % len(STAGES)],
                        "potential_score": round(rng.uniform(0, 100), 1),
                        "potential_category": "ABC"[i % 3],
                    }
                    for i in range(start, min(start + batch, rows))
                ],
            )
            print(f"\rinserted {min(start + batch, rows):,} clients", end="", file=sys.stderr)
    print(file=sys.stderr)
    with crm.engine.connect() as conn:  # statistics, as after any bulk load
        conn.execute(text("ANALYZE"))
        conn.commit()
    print(f"deployment made in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return crm


@contextlib.contextmanager
def postgres_server(directory: Path) -> Iterator[str]:
    from crmkit.testing_postgres import PostgresServer

    with PostgresServer(directory / "postgres") as server:
        yield server.create_database("access_bench")


# -- measuring --------------------------------------------------------------------------------
def rounds(
    variants: dict[str, Callable[[], Any]], repeat: int, burst: int = 10
) -> dict[str, float]:
    """Median seconds per call of each variant.

    Each round runs every variant ``burst`` times in a row and keeps all but
    the first call (which pays for what the previous variant did to the
    caches); the rounds alternate the variants, so that the machine's load
    weighs on all alike. ``repeat`` is the number of calls kept per variant.
    """
    for fn in variants.values():  # warm caches (SQLAlchemy's compiled statements, the pages)
        for _ in range(5):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    gc.disable()
    try:
        for _ in range(max(1, repeat // (burst - 1))):
            for name, fn in variants.items():
                for call in range(burst):
                    start = time.perf_counter()
                    fn()
                    if call:
                        times[name].append(time.perf_counter() - start)
    finally:
        gc.enable()
    return {name: statistics.median(values) for name, values in times.items()}


def columns_sql(crm: CRM, table: str = "c") -> str:
    """The columns the repository lists: every client column and the owner's login."""
    names = ", ".join(f"{table}.{c.name}" for c in crm.metadata.tables["clients"].columns)
    return names + (", u.login AS owner" if table == "c" else ", users.login AS owner")


def placeholders(dialect: str, n: int) -> list[str]:
    return ["?"] * n if dialect == "sqlite" else ["%s"] * n


def page_query(s: Any) -> Any:
    """A page of clients as the engine selects them: the policies' condition, newest first."""
    t = s.tables["clients"]
    users = s.tables["users"]
    return (
        select(t, users.c.login.label("owner"))
        .select_from(t.outerjoin(users, users.c.id == t.c.owner_id))
        .where(s.access.where("read", "client"))
        .order_by(t.c.id.desc())
        .limit(PAGE)
    )


def crm_has_user(crm: CRM, login: str) -> bool:
    with crm.session(readonly=True) as s:
        return s.users.find(login) is not None


def page_variants(
    s: Any, kind: str, admin: Any
) -> tuple[dict[str, Callable[[], Any]], dict[str, Any], str]:
    """The page listed each way for the acting user (``admin``: a session as the admin)."""
    crm = s.crm
    t = s.tables["clients"]
    users = s.tables["users"]
    conn = s.connection
    me = s.user.id

    def engine_query() -> Any:  # the condition is made afresh for every page, as a request does
        return page_query(s)

    cols = columns_sql(crm)
    head = f"SELECT {cols} FROM clients c LEFT JOIN users u ON u.id = c.owner_id WHERE "
    tail = f" ORDER BY c.id DESC LIMIT {PAGE}"
    if kind == "manager":
        where = "c.owner_id = :me"
        params: dict[str, Any] = {"me": me}
        typed = text(head + where + tail)
    else:
        where = "c.owner_id IN (SELECT id FROM users WHERE team_id IN :teams) OR c.owner_id = :me"
        params = {"me": me, "teams": s.access.subject["team_ids"]}
        typed = text(head + where + tail).bindparams(bindparam("teams", expanding=True))
    # the same result types as the engine's query (JSON decoded, times parsed)
    typed = typed.columns(*t.columns, users.c.login.label("owner"))
    # the same SQL on the driver's own cursor: no SQLAlchemy, values as the driver gives them
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    if kind == "manager":
        raw_sql = head + f"c.owner_id = {mark}" + tail
        raw_args: tuple[Any, ...] = (me,)
    else:
        marks = ", ".join([mark] * len(params["teams"]))
        raw_sql = (
            head + f"c.owner_id IN (SELECT id FROM users WHERE team_id IN ({marks}))"
            f" OR c.owner_id = {mark}" + tail
        )
        raw_args = (*params["teams"], me)
    raw = conn.connection.driver_connection

    def raw_cursor() -> list[Any]:
        cursor = raw.cursor()
        cursor.execute(raw_sql, raw_args)
        rows: list[Any] = cursor.fetchall()
        cursor.close()
        return rows

    variants: dict[str, Callable[[], Any]] = {
        "repository": lambda: s.clients.list(limit=PAGE),
        "pushdown": lambda: conn.execute(engine_query()).all(),
        "hand-written": lambda: conn.execute(typed, params).all(),
        "raw cursor": raw_cursor,
    }
    pages = {name: [row.id if hasattr(row, "id") else row[0] for row in fn()]
             for name, fn in variants.items()}  # fmt: skip
    first = pages["repository"]
    assert len(first) == PAGE, f"a page of {len(first)}"
    assert all(page == first for page in pages.values()), "the variants list different pages"
    # the repository's page with no condition at all (the admin's newest 50): what building
    # a page of Client objects costs, with or without policies
    variants["repository, admin"] = lambda: admin.clients.list(limit=PAGE)
    plans = {
        "engine": engine_plan(s, engine_query()),
        "hand-written": (raw_sql, explain(conn, raw_sql, raw_args)),
    }
    return variants, plans, head + where + tail


def explain(conn: Any, sql: str, params: Any) -> list[str]:
    """The plan the database makes for ``sql`` with these parameters (as it is run)."""
    cursor = conn.connection.driver_connection.cursor()
    if conn.dialect.name == "sqlite":
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        plan = [row[-1] for row in cursor.fetchall()]
    else:
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = [row[0] for row in cursor.fetchall()]
    cursor.close()
    return plan


def engine_plan(s: Any, query: Any) -> tuple[str, list[str]]:
    """The engine's query as it is sent (bound parameters, their casts) and its plan."""
    conn = s.connection
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.params
    if compiled.positiontup is not None:
        params = tuple(params[name] for name in compiled.positiontup)
    sql = " ".join(str(compiled).split())
    shown = f"{sql}  -- {dict(compiled.params)}"
    return shown, explain(conn, str(compiled), params)


def decisions(s: Any, views: list[dict[str, Any]]) -> dict[str, float]:
    """Decisions per second of ``allows`` and ``decide`` over ``views``, median of runs."""
    access = s.access
    allows = access.allows
    decide = access.decide
    allowed = sum(allows("read", "client", v) for v in views)  # compiles once; the warm-up

    def run_allows() -> None:
        for v in views:
            allows("read", "client", v)

    def run_decide() -> None:
        for v in views:
            decide("read", "client", v)

    timed = rounds({"allows": run_allows, "decide": run_decide}, 7)
    return {
        "allows": len(views) / timed["allows"],
        "decide": len(views) / timed["decide"],
        "allowed": allowed / len(views),
    }


def client_views(s: Any, count: int) -> list[dict[str, Any]]:
    """``count`` different records as policies see them, all attributes, in one query."""
    t = s.tables["clients"]
    users = s.tables["users"]
    resource = s.crm.access.resource("client")
    cols = [
        users.c.team_id.label(name) if name == "team_id" else t.c[a.source.name].label(name)
        for name, a in resource.attributes.items()
    ]
    query = (  # the newest records: every manager owns some of them
        select(*cols)
        .select_from(t.outerjoin(users, users.c.id == t.c.owner_id))
        .order_by(t.c.id.desc())
        .limit(count)
    )
    views = [dict(r._mapping) for r in s.connection.execute(query)]
    assert views and views[0] == s.access.view("client", views[0]["id"])
    return views


# -- the report -------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="Clients in the table.")
    parser.add_argument("--managers", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=900, help="Calls measured per variant.")
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--database-url", help="A PostgreSQL database (default: SQLite).")
    parser.add_argument(
        "--postgres", action="store_true", help="Start a throwaway PostgreSQL server."
    )
    parser.add_argument(
        "--keep", type=Path, help="Work in this folder and keep it (a second run reuses it)."
    )
    parser.add_argument("--check", action="store_true", help="Exit 1 when a target is missed.")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        if args.keep:
            work = args.keep
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crmkit-access-")))
        url = args.database_url
        if args.postgres:
            url = stack.enter_context(postgres_server(work))
        if (work / "crmkit" / "crmkit.toml").exists():  # --keep DIR of an earlier run
            crm = CRM.open(work / "crmkit")
            with crm.session() as s:
                args.rows = s.clients.count()
        else:
            crm = build(work / "crmkit", url, args.rows, args.managers, args.batch_size)
        stack.callback(crm.close)
        return report(crm, args)
    return 0  # pragma: no cover


def report(crm: CRM, args: argparse.Namespace) -> int:
    import sqlalchemy

    missed: list[str] = []
    with crm.engine.connect() as conn:
        dialect = conn.dialect.name
        version = conn.exec_driver_sql(
            "SELECT sqlite_version()" if dialect == "sqlite" else "SHOW server_version"
        ).scalar()
    print(
        f"{args.rows:,} clients, {args.managers} managers in {TEAMS} teams; "
        f"{dialect} {version}, Python {sys.version.split()[0]}, SQLAlchemy {sqlalchemy.__version__}"
    )
    print(f"a page of {PAGE} clients, newest first; medians of {args.repeat} calls each\n")
    for kind, login in (("manager", "m07"), ("head", "head-2")):
        with (
            crm.session(as_user=login, readonly=True) as s,
            crm.session(readonly=True) as admin,
        ):
            variants, plans, sql = page_variants(s, kind, admin)
            query, plan = plans["engine"]
            print(f"{kind} {login}: the engine's query, as sent, and its plan")
            print(f"  {query.replace(columns_sql(crm, 'clients'), '<columns>')}")
            print("\n".join(f"    {line}" for line in plan))
            print(f"  hand-written: {sql.replace(columns_sql(crm), '<the same columns>')}")
            print("\n".join(f"    {line}" for line in plans["hand-written"][1]))
            timed = rounds(variants, args.repeat)
            s.audit_buffer.clear()  # pages listed to measure are not reads to audit
            admin.audit_buffer.clear()
        if kind == "manager" and crm_has_user(crm, "newcomer"):
            with crm.session(as_user="newcomer", readonly=True) as s:
                query, plan = engine_plan(s, page_query(s))
            print("  the engine's query for a manager who owns no client yet (newcomer):")
            print("\n".join(f"    {line}" for line in plan))
        hand, raw = timed["hand-written"], timed["raw cursor"]
        for name, seconds in timed.items():
            print(
                f"  {name:<18} {seconds * 1e3:7.3f} ms   "
                f"/hand-written {seconds / hand:5.2f}   /raw cursor {seconds / raw:5.2f}"
            )
        checks = {
            "pushdown / hand-written": timed["pushdown"] / hand,
            "repository / repository, admin": timed["repository"] / timed["repository, admin"],
        }
        for name, ratio in checks.items():
            print(f"  ratio {name:<31} {ratio:5.2f}  (target <= {PAGE_TARGET})")
            if ratio > PAGE_TARGET:
                missed.append(f"{kind}: {name} {ratio:.2f} > {PAGE_TARGET}")
        print()
    print(f"single-record decisions over {VIEWS:,} different client records:")
    for login in ("m07", "head-2"):
        with crm.session(as_user=login, readonly=True) as s:
            views = client_views(s, VIEWS)
            rates = decisions(s, views)
        print(
            f"  {login:<7} allows {rates['allows']:>10,.0f}/s   decide {rates['decide']:>9,.0f}/s"
            f"   ({rates['allowed']:.0%} of the records allowed)"
        )
        if rates["allows"] < DECISIONS_TARGET:
            missed.append(f"{login}: {rates['allows']:,.0f} decisions/s < {DECISIONS_TARGET:,}")
    print(f"\ntargets: page ratios <= {PAGE_TARGET}, >= {DECISIONS_TARGET:,} decisions/s (allows)")
    print("missed: " + "; ".join(missed) if missed else "all targets met")
    return 1 if missed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
