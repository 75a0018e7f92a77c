"""The email open pixel under load, against a bare Starlette endpoint returning the same bytes.

    python benchmarks/pixel.py [--messages 1000] [--rounds 3] [--duration 10] [--warmup 3]
                               [--connections 32] [--threads 1]
                               [--database-url URL | --postgres] [--keep DIR] [--check]

Makes a deployment (``CRM.create``) with the ``email_tracking`` plugin (named
in ``crmkit.toml``), a manager with 100 clients and a deal each, and
``--messages`` sent messages in ``email_outbox`` as the SMTP worker leaves
them: instrumented by ``crmkit_email_tracking.instrument.instrument`` (tracked
links and the open pixel ``/t/o/TOKEN.gif``). The pixel paths are taken from
the stored HTML bodies. Then it starts two servers as separate processes,
each uvicorn with one worker on 127.0.0.1, with uvicorn's default (``auto``)
event loop and HTTP parser, as ``crmkit serve`` runs (uvloop and httptools
when installed, else asyncio and h11: the output says which):

* **bare**: a Starlette application with one route, ``/t/o/{token}.gif``,
  returning the same 43-byte GIF with the same headers and nothing else:
  no token check, no database, no middleware, no access log;
* **crmkit**: ``crmkit.server.serve(crm)`` (what ``crmkit serve`` runs:
  ``create_app(crm)`` with its default configuration, so the JSON access log
  is on; it goes to stderr, which is sent to ``/dev/null``). Each hit
  verifies the HMAC token, classifies the hit and stores an
  ``email_events`` row through the plugin's group-commit writer: the answer
  leaves only after the transaction holding the event committed.

Both answer the same (status, body, headers: checked). Each is loaded with
``wrk`` (Debian: ``apt-get install wrk``) with the same settings (default
``-t1 -c32 -d10s``): a Lua script rotates over the pixel paths (every
message in turn) with a desktop browser's ``User-Agent``, so every hit is a
``human`` open. After a warm-up of each, ``--rounds`` runs of each take
turns (bare, crmkit, bare, ...), so that a change of the machine's load hits
both; the figures are the medians of wrk's completed requests per second,
and the ratio crmkit / bare. The crmkit warm-up goes on until every message
has had its first open, which notifies the message's owner (a task and an
interaction, once per message, before the answer): those first opens are far
slower (their rate is printed), and out of the measured rounds, which measure
repeated opens.

Next to the throughput, the server process's CPU time (every thread, from
``/proc``) per answered request: a figure that the machine's other load
disturbs less than requests per second, and whose ratio bare / crmkit is
what the throughput ratio would be if each server were bound by its own CPU
alone.

**Every answered open is stored**: after each crmkit round (once the count
of ``email_events`` rows stops changing, and again after the server stopped,
which flushes the writer's queue) the rows added must be at least the 2xx
answers wrk completed, and at most those plus the requests wrk may have left
in flight when it stopped (one per connection, plus any that read/write
errors cut): an event is committed before its answer is sent, so a request
cut off at the end is stored but never counted as answered by wrk. Outside
those bounds the script prints FAILED and exits 1. The database's durability
settings are printed: SQLite as crmkit opens it (WAL, ``synchronous=NORMAL``:
a commit survives a crash of the process, not of the OS); with
``--postgres``, the throwaway server of ``crmkit.testing_postgres`` with
``fsync``, ``synchronous_commit`` and ``full_page_writes`` turned back on
(the test server turns them off), as a production server runs.

Target (issue 9): crmkit / bare >= 0.5 (``--check`` exits 1 when missed).

The figures depend on the machine: wrk, both servers and (with
``--postgres``) PostgreSQL share its cores. On a 2-core machine wrk takes a
large part of one core, so each server runs with about one core: both are
bound by the CPU of their event loop (crmkit's database writes run in a
worker thread, and PostgreSQL's backend takes its share of the same cores).
The load average is printed before and after; other work on the machine
makes the figures vary by 10-20 % from run to run. ``--keep DIR`` keeps the
deployment (a second run reuses it; the events accumulate, the check counts
those of each round).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

RATIO_TARGET = 0.5
PLUGIN = "crmkit_email_tracking"
CLIENTS = 100
#: A desktop browser, as a person's mail program or webmail loads the pixel.
BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
PIXEL_PATH = re.compile(r"/t/o/[A-Za-z0-9_\-]+\.gif")

#: wrk's script: every request the next pixel path; at the end one line of JSON figures.
LUA = """
local paths = {}
for line in io.lines("%(paths)s") do paths[#paths + 1] = line end
local i = 0
wrk.headers["User-Agent"] = "%(agent)s"
wrk.headers["Accept"] = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRK-JSON {"requests": %%d, "duration_us": %%d, "bytes": %%d, "connect": %%d, '
    .. '"read": %%d, "write": %%d, "status": %%d, "timeout": %%d, "p50_us": %%d, '
    .. '"p99_us": %%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


# -- the deployment -----------------------------------------------------------------------
def build(root: Path, url: str | None, messages: int) -> Any:
    """The deployment with the plugin, a manager, clients with deals and sent messages."""
    from crmkit_email_tracking.instrument import instrument
    from sqlalchemy import insert, update

    from crmkit.core.app import CRM
    from crmkit.core.plugins import load_plugins
    from crmkit.core.schema import utcnow

    started = time.perf_counter()
    crm = CRM.create(
        root,
        database_url=url,
        plugins=load_plugins(entry_points=False, modules=[PLUGIN]),
        entry_points=False,
    )
    config = Path(crm.config.root) / "crmkit.toml"  # the plugin named, for CRM.open and serve
    text = config.read_text("utf-8")
    assert "modules = []" in text
    config.write_text(text.replace("modules = []", f'modules = ["{PLUGIN}"]', 1), "utf-8")
    crm.close()
    crm = CRM.open(root, entry_points=False)
    with crm.session() as s:
        s.users.add("anna", role="manager", name="Anna Petrova")
    deals: list[tuple[int, int]] = []
    with crm.session(as_user="anna") as s:
        for n in range(CLIENTS):
            client = s.clients.create(
                f"Client {n}", email=f"buyer{n}@client{n}.example", owner="anna"
            )
            deal = s.deals.open(client.id, pipeline="b2b", title=f"Order {n}", owner="anna")
            deals.append((client.id, deal.id))
    outbox = crm.metadata.tables["email_outbox"]
    sent_at = utcnow() - dt.timedelta(hours=2)
    with crm.session(as_user="anna") as s:
        conn = s.connection
        for n in range(messages):
            client_id, deal_id = deals[n % CLIENTS]
            message_id = conn.execute(
                insert(outbox)
                .values(
                    client_id=client_id,
                    deal_id=deal_id,
                    user_id=s.user.id,
                    template="proposal",
                    subject="Our proposal",
                    to_address=f"buyer{n % CLIENTS}@client{n % CLIENTS}.example",
                    body_html="",
                    body_text="",
                    token=f"bench-{n}",
                    status="sent",
                    sent_at=sent_at,
                )
                .returning(outbox.c.id)
            ).scalar_one()
            html = (
                "<html><body><p>Hello,</p><p>our proposal: "
                '<a href="https://shop.example/catalog?a=1">the catalog</a></p></body></html>'
            )
            done = instrument(crm, message_id, html, "See https://shop.example/catalog?a=1")
            conn.execute(
                update(outbox)
                .where(outbox.c.id == message_id)
                .values(body_html=done.html, body_text=done.text, links=done.links)
            )
    print(
        f"deployment made in {time.perf_counter() - started:.1f} s: {messages:,} sent messages",
        file=sys.stderr,
    )
    return crm


def pixel_paths(crm: Any) -> list[str]:
    """The pixel path of every sent message, taken from its HTML body."""
    from sqlalchemy import select

    outbox = crm.metadata.tables["email_outbox"]
    paths = []
    with crm.connect(readonly=True) as conn:
        for (html,) in conn.execute(
            select(outbox.c.body_html).where(outbox.c.status == "sent").order_by(outbox.c.id)
        ):
            found = PIXEL_PATH.search(html)
            if found:
                paths.append(found.group(0))
    return paths


def count_events(crm: Any) -> int:
    from sqlalchemy import func, select

    table = crm.metadata.tables["email_events"]
    with crm.connect(readonly=True) as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def settled(crm: Any) -> int:
    """The events' count once it stops changing (the writer caught up)."""
    count = count_events(crm)
    while True:
        time.sleep(0.5)
        now = count_events(crm)
        if now == count:
            return count
        count = now


def count_notified(crm: Any) -> int:
    from sqlalchemy import func, select

    outbox = crm.metadata.tables["email_outbox"]
    with crm.connect(readonly=True) as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(outbox).where(outbox.c.notified_at.is_not(None))
            ).scalar_one()
        )


# -- the servers (run as this script with --serve) ---------------------------------------
def serve_bare(port: int) -> None:
    """One route returning the pixel's bytes and headers; nothing else."""
    import uvicorn
    from crmkit_email_tracking.routes import PIXEL, PIXEL_HEADERS
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def pixel(request: Request) -> Response:
        return Response(PIXEL, headers=PIXEL_HEADERS)

    app = Starlette(routes=[Route("/t/o/{token}.gif", pixel, methods=["GET", "HEAD"])])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=True,
    )


def serve_crmkit(root: Path, port: int) -> None:
    """What ``crmkit serve`` runs: ``create_app(crm)`` with the access log, under uvicorn."""
    from crmkit import server
    from crmkit.core.app import CRM

    crm = CRM.open(root, entry_points=False)
    server.serve(crm, host="127.0.0.1", port=port)


def durable_postgres(stack: contextlib.ExitStack) -> str:
    """A throwaway PostgreSQL server with fsync and synchronous commits back on; a database."""
    from crmkit.testing_postgres import PostgresServer

    scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="crmkit-pixel-pg-"))
    server = stack.enter_context(PostgresServer(Path(scratch) / "postgres"))
    for name in ("fsync", "synchronous_commit", "full_page_writes"):  # the test server's are off
        server.psql(f"ALTER SYSTEM SET {name} = on")
    server.psql("SELECT pg_reload_conf()")
    return server.create_database("pixel_bench")


def durability(crm: Any) -> str:
    """What a commit means on this database (its settings, read back)."""
    from sqlalchemy import text

    with crm.connect(readonly=True) as conn:
        if crm.engine.dialect.name == "sqlite":
            level = conn.execute(text("PRAGMA synchronous")).scalar_one()
            mode = conn.execute(text("PRAGMA journal_mode")).scalar_one()
            name = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(level, str(level))
            note = " (commits survive a crash of the process, not of the OS)" if level < 2 else ""
            return f"journal_mode={mode}, synchronous={name}{note}"
        if crm.engine.dialect.name == "postgresql":
            settings = [
                f"{name}={conn.execute(text(f'SHOW {name}')).scalar_one()}"
                for name in ("fsync", "synchronous_commit", "full_page_writes")
            ]
            return ", ".join(settings)
    return "unknown"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server_process(kind: str, root: Path, probe: str) -> Any:
    """Start ``kind``'s server as a process; yield (base URL, process) once ``probe`` answers."""
    port = free_port()
    command = [sys.executable, __file__, "--serve", kind, "--port", str(port), "--root", str(root)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the {kind} server exited with {proc.returncode} at start")
            try:
                with urllib.request.urlopen(base + probe, timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the {kind} server did not start in 30 s")
            time.sleep(0.1)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # uvicorn's graceful stop: the writer is flushed
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def fetch(url: str) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers={"User-Agent": BROWSER})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, reply.read(), {k.lower(): v for k, v in reply.headers.items()}
    except urllib.error.HTTPError as exc:  # e.g. a kept deployment that needs 'crmkit db upgrade'
        raise SystemExit(f"GET {url}: {exc.code} {exc.read().decode(errors='replace')}") from None


# -- the load -----------------------------------------------------------------------------
def run_wrk(
    base: str, script: Path, args: argparse.Namespace, seconds: float, pid: int | None = None
) -> dict[str, Any]:
    """wrk's figures; with ``pid``, also the server's CPU seconds (every thread) meanwhile."""
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        base + "/",
    ]
    cpu_before = cpu_seconds(pid)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cpu_after = cpu_seconds(pid)
    found = re.search(r"^WRK-JSON (\{.*\})$", out, re.MULTILINE)
    if not found:
        raise SystemExit(f"no figures in wrk's output:\n{out}")
    figures: dict[str, Any] = json.loads(found.group(1))
    figures["rps"] = figures["requests"] / (figures["duration_us"] / 1e6)
    figures["ok"] = figures["requests"] - figures["status"]  # wrk counts status >= 400 apart
    figures["cpu_us"] = None
    if cpu_before is not None and cpu_after is not None and figures["requests"]:
        figures["cpu_us"] = (cpu_after - cpu_before) / figures["requests"] * 1e6
    return figures


def cpu_seconds(pid: int | None) -> float | None:
    """User and system CPU seconds of process ``pid`` so far (Linux ``/proc``; else None)."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def describe(name: str, f: dict[str, Any]) -> str:
    return (
        f"{name:<8}{f['rps']:>10,.0f} req/s  {f['requests']:>8,} answered "
        f"({f['ok']:,} 2xx, {f['status']:,} >= 400)  socket errors "
        f"c/r/w/t {f['connect']}/{f['read']}/{f['write']}/{f['timeout']}  "
        f"latency p50 {f['p50_us'] / 1000:.1f} ms, p99 {f['p99_us'] / 1000:.1f} ms"
        + ("" if f["cpu_us"] is None else f"  server CPU {f['cpu_us']:.0f} us/request")
    )


def loop_and_parser() -> str:
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"{loop} + {http}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000, help="Sent messages (pixel paths).")
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds of each run.")
    parser.add_argument("--warmup", type=float, default=3.0, help="Seconds of warm-up load.")
    parser.add_argument("--rounds", type=int, default=3, help="Runs of each, taking turns.")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk's threads.")
    parser.add_argument("--serve", choices=["bare", "crmkit"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    from _common import add_deployment_options

    add_deployment_options(parser)
    args = parser.parse_args(argv)
    if args.serve == "bare":
        serve_bare(args.port)
        return 0
    if args.serve == "crmkit":
        serve_crmkit(args.root, args.port)
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2

    from _common import deployment

    warnings.filterwarnings("ignore", message="Skipped unsupported reflection")
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        if args.postgres:  # crmkit.testing_postgres's server, made durable as in production
            args.database_url, args.postgres = durable_postgres(stack), False
        crm = deployment(stack, args, "pixel", lambda root, url: build(root, url, args.messages))
        return measure(stack, crm, args, load_before)
    return 0  # pragma: no cover


def measure(
    stack: contextlib.ExitStack, crm: Any, args: argparse.Namespace, load_before: Any
) -> int:
    root = Path(crm.config.root)
    paths = pixel_paths(crm)
    if not paths:
        raise SystemExit("no sent message with a pixel in the deployment")
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crmkit-pixel-wrk-")))
    (work / "paths.txt").write_text("\n".join(paths) + "\n", "ascii")
    script = work / "pixel.lua"
    script.write_text(LUA % {"paths": work / "paths.txt", "agent": BROWSER}, "utf-8")
    dialect = crm.engine.dialect.name
    print(
        f"{len(paths):,} pixel paths; database {dialect}; uvicorn {loop_and_parser()}, one "
        f"worker each; wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, "
        f"{args.rounds} rounds taking turns; {os.cpu_count()} CPUs"
    )
    print("crmkit's JSON access log is on (as by default), written to /dev/null")
    print(f"durability: {durability(crm)}")

    with contextlib.ExitStack() as servers:
        bare_base, bare_proc = servers.enter_context(server_process("bare", root, paths[0]))
        crm_base, crm_proc = servers.enter_context(server_process("crmkit", root, "/health"))
        bare_reply = fetch(bare_base + paths[0])
        crm_reply = fetch(crm_base + paths[0])
        same = bare_reply[0] == crm_reply[0] == 200 and bare_reply[1] == crm_reply[1]
        for name in ("content-type", "content-length", "cache-control", "referrer-policy"):
            same = same and bare_reply[2].get(name) == crm_reply[2].get(name)
        print(f"the same answer from both (status, 43 bytes, headers): {same}")

        # warm-up; on crmkit, until every message's first open has notified its owner
        run_wrk(bare_base, script, args, args.warmup)
        pending = len(paths) - count_notified(crm)
        first = run_wrk(crm_base, script, args, args.warmup)
        if pending:
            print(
                f"first opens: {first['rps']:,.0f} req/s in {args.warmup:g} s of load while "
                f"{pending:,} messages were not notified yet (each first open notifies "
                f"its owner before the answer); notified after it: {count_notified(crm):,}"
            )
        started = time.monotonic()
        while count_notified(crm) < len(paths) and time.monotonic() - started < 300:
            run_wrk(crm_base, script, args, args.warmup)
        notified = count_notified(crm)
        print(f"messages notified before the measured rounds: {notified:,} of {len(paths):,}")
        before = settled(crm)

        runs: dict[str, list[dict[str, Any]]] = {"bare": [], "crmkit": []}
        stored_ok = True
        for n in range(1, args.rounds + 1):
            runs["bare"].append(run_wrk(bare_base, script, args, args.duration, bare_proc.pid))
            print(describe(f"bare {n}", runs["bare"][-1]))
            f = run_wrk(crm_base, script, args, args.duration, crm_proc.pid)
            runs["crmkit"].append(f)
            print(describe(f"crmkit {n}", f))
            after = settled(crm)
            stored, cut = after - before, args.connections + f["read"] + f["write"]
            ok = f["ok"] <= stored <= f["ok"] + cut
            stored_ok = stored_ok and ok
            print(
                f"    opens stored during the round: {stored:,}; answered 2xx: {f['ok']:,} "
                f"(allowed {f['ok']:,} .. {f['ok'] + cut:,}: wrk drops the answers of "
                f"requests in flight when it stops): {'ok' if ok else 'FAILED'}"
            )
            before = after
    leftover = count_events(crm) - before  # the server stopped: its writer flushed
    if leftover:
        print(f"FAILED: {leftover} events stored after the last round settled")
        stored_ok = False
    load_after = os.getloadavg()

    bare_rps = statistics.median(f["rps"] for f in runs["bare"])
    crm_rps = statistics.median(f["rps"] for f in runs["crmkit"])
    ratios = [c["rps"] / b["rps"] for b, c in zip(runs["bare"], runs["crmkit"], strict=True)]
    ratio = crm_rps / bare_rps
    met = ratio >= RATIO_TARGET
    print(f"bare Starlette:   {bare_rps:10,.0f} req/s (median of {args.rounds})")
    print(f"crmkit pixel:     {crm_rps:10,.0f} req/s (median of {args.rounds})")
    print(
        f"ratio crmkit / bare: {ratio:.3f} (target >= {RATIO_TARGET}): "
        f"{'met' if met else 'MISSED'}; per round " + ", ".join(f"{r:.3f}" for r in ratios)
    )
    cpu = {k: [f["cpu_us"] for f in v if f["cpu_us"] is not None] for k, v in runs.items()}
    if cpu["bare"] and cpu["crmkit"]:
        bare_cpu, crm_cpu = statistics.median(cpu["bare"]), statistics.median(cpu["crmkit"])
        print(
            f"server CPU per request: bare {bare_cpu:.0f} us, crmkit {crm_cpu:.0f} us "
            f"(bare / crmkit {bare_cpu / crm_cpu:.3f}: the throughput ratio if both were "
            "bound by their own CPU alone)"
        )
    print(f"every answered open stored: {stored_ok}")
    print(
        "load average (1, 5, 15 min): before "
        + ", ".join(f"{x:.2f}" for x in load_before)
        + "; after "
        + ", ".join(f"{x:.2f}" for x in load_after)
    )
    if not stored_ok:
        print("FAILED: the opens stored differ from the opens answered", file=sys.stderr)
        return 1
    if not same:
        print("FAILED: the two servers do not answer the same", file=sys.stderr)
        return 1
    return 0 if met or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
