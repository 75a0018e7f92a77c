"""Sample data: a seeded, realistic year of a B2B sales department.

:func:`populate` fills a freshly created deployment (``crmkit init DIR
--sample``) with a department of two teams, a few hundred clients with their
contact persons, a year of calls, meetings, emails, letters and mailings,
deals moving down the built-in ``b2b`` pipeline, invoices and tasks::

    from crmkit import CRM
    from crmkit.sample import populate

    crm = CRM.create("demo")
    counts = populate(crm, seed=7, clients=300)

Everything goes through the public session API with back-dated ``at=``
times, so every rule of the core holds and the stored history is genuine:
deals move forward only, through their entry gates, mostly because an
interaction's outcome triggered a pipeline rule (``meeting_scheduled``,
``proposal_requested``, ``agreed``, ``payment_promised``) and by hand where
no rule reaches (filling the client card and then moving, winning after the
payment). Invoices are issued at ``contract_invoice`` and paid before the
win; some deals are lost with a reason from the pipeline's list, some are
still open, and some of those are *stalled*; tasks are done on time, done
late, or still open and overdue.

The data depends only on ``seed`` and ``now`` (and the deployment's
registries and time zone): the same seed and the same ``now`` give the same
data. When the ``segment_b2b`` plugin is installed, most clients get a
segment (``distributor`` or ``corporate``) with parameters valid for its
schema; without it no client has a segment, so no deal can pass the
proposal gate, and deals stop before it (lost, or left open).

Work is done in one transaction per batch of clients acting as the user who
does it (the marketer, the clients' manager), never one per row.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .core.errors import ConfigError, Conflict, ValidationError
from .core.pipeline import LOST, TERMINAL, WON, Pipeline

if TYPE_CHECKING:  # pragma: no cover
    from .core.app import CRM
    from .core.store import Session

__all__ = ["COUNT_KEYS", "populate"]

#: The keys of the dictionary :func:`populate` returns, in order.
COUNT_KEYS = (
    "teams",
    "users",
    "clients",
    "contacts",
    "deals",
    "deals_won",
    "deals_lost",
    "deals_open",
    "deals_stalled",
    "interactions",
    "invoices",
    "invoices_paid",
    "tasks",
    "tasks_overdue",
)

PIPELINE = "b2b"
#: The stages of the built-in b2b pipeline the sample walks deals through.
STAGES = ("qualification", "presentation", "proposal", "contract_invoice", "payment_shipment")

# -- the people -------------------------------------------------------------------------
DEPARTMENT = "Sales"
KEY_ACCOUNTS = "Key accounts"
REGIONS = "Regions"
HEAD = ("i.vasilyev", "Igor Vasilyev")
MARKETER = ("o.melnyk", "Olha Melnyk")
MANAGERS = (
    ("d.sokolov", "Dmitry Sokolov", KEY_ACCOUNTS),
    ("a.petrenko", "Anna Petrenko", KEY_ACCOUNTS),
    ("s.kuznetsov", "Sergei Kuznetsov", KEY_ACCOUNTS),
    ("o.bondarenko", "Oksana Bondarenko", REGIONS),
    ("t.shevchuk", "Taras Shevchuk", REGIONS),
    ("y.morozova", "Yulia Morozova", REGIONS),
    ("p.lysenko", "Pavlo Lysenko", REGIONS),
)

# -- the clients ------------------------------------------------------------------------
CITIES = {
    "ru": (
        ("Moskva", "495"),
        ("Sankt-Peterburg", "812"),
        ("Kazan", "843"),
        ("Yekaterinburg", "343"),
        ("Novosibirsk", "383"),
        ("Nizhny Novgorod", "831"),
        ("Samara", "846"),
        ("Rostov-na-Donu", "863"),
        ("Krasnodar", "861"),
        ("Voronezh", "473"),
    ),
    "ua": (
        ("Kyiv", "44"),
        ("Kharkiv", "57"),
        ("Lviv", "32"),
        ("Odesa", "48"),
        ("Dnipro", "56"),
        ("Zaporizhzhia", "61"),
    ),
}
REGION_NAMES = {
    "ru": (
        "Moskva",
        "Moskovskaya oblast",
        "Sankt-Peterburg",
        "Tatarstan",
        "Sverdlovskaya oblast",
        "Novosibirskaya oblast",
        "Samarskaya oblast",
        "Rostovskaya oblast",
        "Krasnodarsky krai",
        "Voronezhskaya oblast",
    ),
    "ua": (
        "Kyivska oblast",
        "Kharkivska oblast",
        "Lvivska oblast",
        "Odeska oblast",
        "Dnipropetrovska oblast",
        "Zaporizka oblast",
        "Poltavska oblast",
    ),
}
LEGAL_FORMS = {"ru": ("OOO", "OOO", "OOO", "AO", "PAO", "IP"), "ua": ("TOV", "TOV", "PP", "PrAT")}
NAME_ROOTS = (
    "Tekhno",
    "Prom",
    "Agro",
    "Stroy",
    "Energo",
    "Ural",
    "Sibir",
    "Volga",
    "Dnipro",
    "Neva",
    "Baltik",
    "Altai",
    "Kama",
    "Avto",
    "Med",
    "Info",
    "Elektro",
    "Metall",
    "Khim",
    "Trans",
    "Zerno",
    "Polimer",
    "Ofis",
    "Sever",
    "Yug",
    "Vostok",
    "Tsentr",
    "Start",
    "Alfa",
    "Vector",
)
NAME_ENDINGS = (
    "servis",
    "snab",
    "torg",
    "komplekt",
    "trade",
    "group",
    "logistik",
    "resurs",
    "invest",
    "systems",
    "opt",
    "market",
    "tekh",
    "line",
    "soyuz",
)
FIRST_NAMES = {
    "ru": (
        ("Aleksei", "m"),
        ("Dmitry", "m"),
        ("Sergei", "m"),
        ("Andrei", "m"),
        ("Mikhail", "m"),
        ("Nikolai", "m"),
        ("Vladimir", "m"),
        ("Roman", "m"),
        ("Yelena", "f"),
        ("Natalia", "f"),
        ("Irina", "f"),
        ("Tatiana", "f"),
        ("Svetlana", "f"),
        ("Marina", "f"),
        ("Yekaterina", "f"),
        ("Olga", "f"),
    ),
    "ua": (
        ("Oleksandr", "m"),
        ("Andriy", "m"),
        ("Mykola", "m"),
        ("Bohdan", "m"),
        ("Yurii", "m"),
        ("Vasyl", "m"),
        ("Oksana", "f"),
        ("Olena", "f"),
        ("Iryna", "f"),
        ("Halyna", "f"),
        ("Nataliia", "f"),
        ("Mariia", "f"),
    ),
}
SURNAMES = {  # (male, female)
    "ru": (
        ("Ivanov", "Ivanova"),
        ("Smirnov", "Smirnova"),
        ("Popov", "Popova"),
        ("Volkov", "Volkova"),
        ("Fedorov", "Fedorova"),
        ("Morozov", "Morozova"),
        ("Lebedev", "Lebedeva"),
        ("Kozlov", "Kozlova"),
        ("Novikov", "Novikova"),
        ("Orlov", "Orlova"),
        ("Zaitsev", "Zaitseva"),
        ("Pavlov", "Pavlova"),
    ),
    "ua": (
        ("Kovalenko", "Kovalenko"),
        ("Bondarenko", "Bondarenko"),
        ("Tkachenko", "Tkachenko"),
        ("Kravchenko", "Kravchenko"),
        ("Shevchuk", "Shevchuk"),
        ("Melnyk", "Melnyk"),
        ("Koval", "Koval"),
        ("Polishchuk", "Polishchuk"),
        ("Savchenko", "Savchenko"),
        ("Hnatiuk", "Hnatiuk"),
    ),
}
POSITIONS = (
    "Director",
    "Commercial director",
    "Procurement manager",
    "Chief accountant",
    "IT manager",
    "Office manager",
    "Head of logistics",
)
INDUSTRIES = (
    "retail",
    "logistics",
    "manufacturing",
    "banking",
    "healthcare",
    "education",
    "construction",
    "government",
    "IT services",
)
EQUIPMENT = ("laser printer", "MFP", "copier", "scanner", "plotter", "label printer")
PRODUCTS = {
    "distributor": (
        "Cartridge wholesale batch",
        "Printers for resale",
        "Dealer agreement",
        "MFP batch for resale",
        "Spare parts supply",
    ),
    "corporate": (
        "Office MFP fleet",
        "Printer lease",
        "Managed print service",
        "Cartridge supply contract",
        "Service contract",
        "Scanner rollout",
    ),
}
#: Marketing channels whose leads the marketer enters; the others a manager enters.
MARKETING = {"website", "email_campaign", "advertising", "social", "event"}
SOURCE_WEIGHTS = {
    "website": 18,
    "inbound_call": 12,
    "cold_call": 20,
    "email_campaign": 10,
    "advertising": 8,
    "social": 6,
    "referral": 10,
    "partner": 6,
    "event": 6,
    "import": 2,
    "other": 2,
}
#: The marketer's first touch for leads from a marketing channel: kind, topic, outcome.
FIRST_TOUCH = {
    "website": ("campaign", "advertising", "lead"),
    "advertising": ("campaign", "advertising", "lead"),
    "social": ("campaign", "promotion", "lead"),
    "email_campaign": ("mailing", "promotion", "lead"),
    "event": ("event", "exhibition", "lead"),
}

# -- how deals go: per stage, the base chance to lose the deal there, to get stuck
# there (left open with no further progress), and how many routine contacts happen.
LOSE = {
    "qualification": 0.22,
    "presentation": 0.2,
    "proposal": 0.25,
    "contract_invoice": 0.1,
    "payment_shipment": 0.04,
}
STUCK = {
    "qualification": 0.03,
    "presentation": 0.04,
    "proposal": 0.04,
    "contract_invoice": 0.03,
    "payment_shipment": 0.03,
}
FILLERS = {
    "qualification": (0, 2),
    "presentation": (1, 2),
    "proposal": (0, 2),
    "contract_invoice": (0, 1),
    "payment_shipment": (0, 1),
}
LOST_REASONS = {
    "qualification": ("no_need", "no_budget", "bad_fit", "no_response"),
    "presentation": ("no_need", "timing", "no_budget", "competitor"),
    "proposal": ("price", "competitor", "timing", "no_response"),
    "contract_invoice": ("price", "no_budget", "competitor", "timing"),
    "payment_shipment": ("no_budget", "other"),
}
LOSING_TOPIC = {
    "qualification": "qualification",
    "presentation": "presentation",
    "proposal": "proposal_followup",
    "contract_invoice": "negotiation",
    "payment_shipment": "payment_reminder",
}
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
PLAN_STEPS = ("Review stalled deals", "Update the forecast", "Plan next month's calls")
HEAD_STEPS = ("Check plan against fact", "Review overdue tasks", "Approve the bonuses")
MAILING_OUTCOMES = (("sent", 60), ("opened", 24), ("clicked", 10), ("unsubscribed", 3), ("lead", 3))

BATCH = 25  #: clients per transaction
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def populate(
    crm: CRM, *, seed: int = 7, clients: int = 300, now: dt.datetime | None = None
) -> dict[str, int]:
    """Fill a new deployment with a seeded, realistic year of B2B sales; return the counts.

    ``now`` is the reference time (default: the current UTC time): clients
    entered the base during the year before it, every recorded time is at or
    before it, and *stalled* and *overdue* are judged at it. The same
    ``seed`` and ``now`` give the same data.

    The deployment must be new: :class:`~crmkit.Conflict` if it already has
    clients or teams. It needs the built-in ``b2b`` pipeline
    (:class:`~crmkit.ConfigError` otherwise).

    Returns how many of each were made (``teams``, ``users``, ``clients``,
    ``contacts``, ``deals``, ``interactions``, ``invoices``, ``tasks``) and
    their state at ``now`` (``deals_won``, ``deals_lost``, ``deals_open``,
    ``deals_stalled``, ``invoices_paid``, ``tasks_overdue``), keyed as in
    :data:`COUNT_KEYS`.
    """
    if isinstance(clients, bool) or not isinstance(clients, int) or clients < 0:
        raise ValidationError("must be a whole number of clients, 0 or more", field="clients")
    if now is None:
        now = dt.datetime.now(dt.UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=crm.tz)
    now = now.astimezone(dt.UTC)
    pipeline = crm.pipelines.get(PIPELINE)
    if (
        pipeline is None
        or pipeline.entity != "deal"
        or not set(STAGES) <= set(pipeline.stage_names)
    ):
        raise ConfigError(
            f"the sample data needs the built-in {PIPELINE!r} pipeline with the stages "
            f"{', '.join(STAGES)}",
            field="pipelines",
        )
    has_segments = {"distributor", "corporate"} <= set(crm.segments)
    planner = _Planner(crm, random.Random(seed), now, pipeline, has_segments)
    plans, user_scripts, mailings = planner.plan(clients)
    runner = _Runner(crm, pipeline, now, random.Random(seed + 1))
    runner.run(plans, user_scripts, mailings)
    _channel_costs(crm, now, random.Random(seed + 2))
    _plans(crm, now, random.Random(seed + 3))
    counts = runner.counts()
    web_orders = _shortcuts(crm, now, random.Random(seed + 4))
    counts["deals"] += web_orders
    counts["deals_won"] += web_orders
    _performance_settings(crm)
    return counts


#: what the marketing channels cost a month, about (the sample varies it by up to 20%)
MONTHLY_COSTS = {
    "website": 45_000,
    "advertising": 160_000,
    "email_campaign": 12_000,
    "social": 60_000,
    "cold_call": 30_000,
}
#: a quarter's exhibitions and events
QUARTERLY_EVENTS = 150_000


def _channel_costs(crm: CRM, now: dt.datetime, rng: random.Random) -> None:
    """A year of channel costs, recorded by the marketer: monthly, and events per quarter."""
    today = now.astimezone(crm.tz).date()
    month = today.replace(day=1)
    months = []
    for _ in range(12):
        months.append(month)
        month = (month - dt.timedelta(days=1)).replace(day=1)
    with crm.session(as_user=MARKETER[0]) as s:
        for first in reversed(months):
            for channel, base in MONTHLY_COSTS.items():
                amount = round(base * rng.uniform(0.8, 1.2), -2)
                s.channel_costs.record(channel, period=f"{first:%Y-%m}", amount=amount)
        quarters = sorted({(m.year, (m.month - 1) // 3 + 1) for m in months})
        for year, quarter in quarters:
            amount = round(QUARTERLY_EVENTS * rng.uniform(0.8, 1.2), -2)
            s.channel_costs.record("event", period=f"{year}-Q{quarter}", amount=amount)


#: the KPIs the sample plans for each person, as the default motivation scheme weighs them
PLANNED_KPIS = ("attributed_revenue", "calls_outbound", "meetings", "complete_records")
#: the sample's settings of the KPI plugin, appended to crmkit.toml
PERFORMANCE_SETTINGS = """
# The sample's rule of a complete record (docs/kpis.rst): a won deal counts for
# its manager's bonus only with a meeting logged on it.
[plugin.kpis]
record_interactions = ["meeting"]
"""


def _plans(crm: CRM, now: dt.datetime, rng: random.Random) -> None:
    """Plans for the last full month and the current one, from each person's recent months.

    A person's target for a KPI is their monthly mean over the three months
    before, raised by 0 to 25% (ratios: 90%); a KPI they had nothing of gets
    no plan. Set by the admin (heads could set their team's).
    """
    from .core.kpis import Window, run
    from .core.reports import Period

    today = now.astimezone(crm.tz).date()
    this_month = today.replace(day=1)
    last_month = (this_month - dt.timedelta(days=1)).replace(day=1)
    history_start = (last_month - dt.timedelta(days=70)).replace(day=1)
    with crm.session() as s:
        people = [u for u in s.users.list() if u.role.value in ("manager", "head") and u.active]
        kpis = [crm.kpi(name) for name in PLANNED_KPIS if name in crm.kpis]
        if not people or not kpis:
            return
        history = Period(history_start, last_month, "the three months before")
        start, end = history.bounds(crm.tz)
        facts = run(s, kpis, Window(start, end, tuple(p.id for p in people), history, now))
        for first in (last_month, this_month):
            for person in people:
                for kpi in kpis:
                    fact = facts[kpi.id][person.id]
                    if not fact.numerator:
                        continue
                    if kpi.is_ratio:
                        target: Any = Decimal("0.90")
                    else:
                        mean = float(fact.numerator) / 3 * rng.uniform(1.0, 1.25)
                        digits = -3 if kpi.unit == "money" else 0
                        target = max(1, round(mean, digits))
                    s.plans.set(kpi.id, period=f"{first:%Y-%m}", target=target, user=person.login)


#: the pipeline of the web orders that some managers close without recording the work
SHORTCUT_PIPELINE = "webshop"


def _shortcuts(crm: CRM, now: dt.datetime, rng: random.Random) -> int:
    """Web orders closed as won straight away, with nothing logged: deals no bonus counts.

    In the last full month and in the current one (up to ``now``), two
    managers each open a ``webshop`` deal for one of their clients and win
    it at once, from its first stage, logging no interaction: the rule of a
    complete record (docs/kpis.rst) leaves them unattributed. Returns how
    many were made.
    """
    flow = crm.pipelines.get(SHORTCUT_PIPELINE)
    if flow is None or flow.entity != "deal" or not flow.allow_skip:
        return 0
    made = 0
    today = now.astimezone(crm.tz).date()
    this_month = today.replace(day=1)
    last_month = (this_month - dt.timedelta(days=1)).replace(day=1)
    with crm.session() as s:
        managers = sorted(u.login for u in s.users.list() if u.role.value == "manager")
        for first in (last_month, this_month):
            start = dt.datetime.combine(first, dt.time(9), crm.tz)
            span = min(now, start + dt.timedelta(days=27)) - start
            if span <= dt.timedelta(0):
                continue
            for login in rng.sample(managers, min(2, len(managers))):
                owned = s.clients.list(owner=login, limit=50)
                if not owned:
                    continue
                client = rng.choice(owned)
                at = start + span * rng.random()
                deal = s.deals.open(
                    client.id,
                    pipeline=flow.name,
                    amount=rng.randrange(20, 150) * 1000,
                    title=f"Web order: {client.name}",
                    owner=login,
                    at=at,
                )
                s.deals.win(deal.id, at=at + dt.timedelta(minutes=rng.randint(5, 90)))
                made += 1
    return made


def _performance_settings(crm: CRM) -> None:
    """Append :data:`PERFORMANCE_SETTINGS` to the deployment's crmkit.toml (once)."""
    path = crm.config.root / "crmkit.toml"
    if not path.is_file():
        return
    text = path.read_text("utf-8")
    if "[plugin.kpis]" not in text:
        path.write_text(text.rstrip("\n") + "\n" + PERFORMANCE_SETTINGS, "utf-8")


# == planning: decide everything up front, in Python, from the seeded generator ===========
@dataclass(slots=True)
class _Op:
    """One planned call of the session API: when, what, with which arguments."""

    at: dt.datetime
    name: str
    args: dict[str, Any]
    deal: int | None = None  #: the client's deal number (0, 1 ...) it concerns


@dataclass
class _Script:
    """Planned operations of one actor on one client (or on nobody, for own tasks)."""

    actor: str
    ops: list[_Op] = field(default_factory=list)
    of: _ClientPlan | None = None  #: the client, when its card was made by another script
    # filled in while running:
    client_id: int | None = None
    contact_ids: list[int] = field(default_factory=list)
    deals: dict[int, _DealState] = field(default_factory=dict)
    tasks: dict[str, int] = field(default_factory=dict)
    invoices: dict[str, int] = field(default_factory=dict)


@dataclass
class _ClientPlan(_Script):
    creator: str = ""
    created_at: dt.datetime = _EPOCH
    card: dict[str, Any] = field(default_factory=dict)
    contacts: list[dict[str, Any]] = field(default_factory=list)
    touch: list[_Op] = field(default_factory=list)  #: the marketer's first touch
    short: str = ""
    size: float = 1.0
    country: str = "ru"
    segment: str | None = None


@dataclass
class _DealState:
    id: int
    stage: str
    entered: dt.datetime
    status: str = "open"
    open_invoices: list[str] = field(default_factory=list)


class _Planner:
    def __init__(
        self, crm: CRM, rng: random.Random, now: dt.datetime, pipeline: Pipeline, segments: bool
    ) -> None:
        self.rng = rng
        self.now = now
        self.tz = crm.tz
        self.pipeline = pipeline
        self.segments = segments
        self.days = {s.name: s.days or 14 for s in pipeline.stages}
        self.reasons = list(pipeline.lost_reasons)
        lifecycle = crm.lifecycle
        self.client_reasons = list(lifecycle.lost_reasons) if lifecycle is not None else None
        channels = list(crm.channels)
        self.sources = channels
        self.source_weights = [SOURCE_WEIGHTS.get(c, 1) for c in channels]
        self.names: set[str] = set()
        self.domains: set[str] = set()
        self.skill = {login: rng.uniform(0.75, 1.25) for login, _, _ in MANAGERS}
        self.task_no = 0

    # -- the whole plan ------------------------------------------------------------------
    def plan(self, count: int) -> tuple[list[_ClientPlan], list[_Script], list[_Script]]:
        rng = self.rng
        # more clients lately than a year ago: the base grows
        ages = sorted((3 + 362 * rng.random() ** 1.2 for _ in range(count)), reverse=True)
        plans = [self._client(self.now - dt.timedelta(days=age)) for age in ages]
        for plan in plans:
            self._history(plan)
        for plan in plans:  # what lies beyond now has not happened yet
            plan.ops = sorted((op for op in plan.ops if op.at <= self.now), key=lambda op: op.at)
        self._number_invoices(plans)
        return plans, self._own_tasks(), self._mailings(plans)

    # -- time ------------------------------------------------------------------------------
    def workday(self, t: dt.datetime) -> dt.datetime:
        """``t`` moved into working hours (Mon-Fri, 9-19 in the deployment's zone)."""
        local = t.astimezone(self.tz)
        if local.weekday() >= 5:
            local += dt.timedelta(days=7 - local.weekday())
        if not 9 <= local.hour < 19:
            local = local.replace(hour=self.rng.randint(9, 18))
        local = local.replace(minute=self.rng.randint(0, 59), second=0, microsecond=0)
        return local.astimezone(dt.UTC)

    def later(self, t: dt.datetime, lo_days: float, hi_days: float) -> dt.datetime:
        """A working time some days after ``t`` (always strictly after it)."""
        out = self.workday(t + dt.timedelta(days=self.rng.uniform(lo_days, hi_days)))
        return out if out > t else self.soon(t, 10, 90)

    def soon(self, t: dt.datetime, lo_min: int, hi_min: int) -> dt.datetime:
        return t + dt.timedelta(minutes=self.rng.randint(max(lo_min, 1), max(hi_min, 1)))

    # -- clients ---------------------------------------------------------------------------
    def _client(self, created: dt.datetime) -> _ClientPlan:
        rng = self.rng
        country = "ru" if rng.random() < 0.65 else "ua"
        city, code = rng.choice(CITIES[country])
        short, slug = self._name()
        form = rng.choice(LEGAL_FORMS[country])
        size = min(max(rng.lognormvariate(0, 0.75), 0.2), 8.0)
        segment: str | None = None
        params: dict[str, Any] = {}
        if self.segments and rng.random() < 0.85:
            segment = "distributor" if rng.random() < 0.35 else "corporate"
            params = self._params(segment, size, country)
        key = (
            segment == "distributor"
            or (segment == "corporate" and params["employees"] >= 400)
            or (segment is None and size > 1.6)
        )
        team = KEY_ACCOUNTS if key else REGIONS
        owners = [login for login, _, t in MANAGERS if t == team]
        owner = rng.choice(owners)
        source = rng.choices(self.sources, self.source_weights)[0] if self.sources else None
        creator = MARKETER[0] if source in MARKETING else owner
        created_at = self.workday(created)
        requisites: dict[str, Any] = {"city": city}
        if country == "ru":
            requisites["inn"] = "".join(str(rng.randint(0, 9)) for _ in range(10))
        else:
            requisites["edrpou"] = "".join(str(rng.randint(0, 9)) for _ in range(8))
        card = {
            "name": f'{form} "{short}"',
            "email": f"{rng.choice(('info', 'office', 'sales', 'zakaz'))}@{slug}.example",
            "phone": self._phone(country, code),
            "requisites": requisites,
            "segment": segment,
            "params": params,
            "owner": owner,
            "source": source,
            "created_at": created_at,
        }
        plan = _ClientPlan(
            actor=owner,
            creator=creator,
            created_at=created_at,
            card=card,
            short=short,
            size=size,
            country=country,
            segment=segment,
        )
        people = set()
        for _ in range(rng.choice((1, 1, 2, 2, 2, 3))):
            first, sex = rng.choice(FIRST_NAMES[country])
            last = rng.choice(SURNAMES[country])[0 if sex == "m" else 1]
            if (first, last) in people:
                continue
            people.add((first, last))
            plan.contacts.append(
                {
                    "name": f"{first} {last}",
                    "position": rng.choice(POSITIONS),
                    "email": f"{first.lower()}.{last.lower()}@{slug}.example",
                    "phone": self._phone(country, None),
                }
            )
        if source in FIRST_TOUCH:
            kind, topic, outcome = FIRST_TOUCH[source]
            plan.touch.append(
                _Op(
                    self.soon(created_at, 1, 20),
                    "log",
                    {"kind": kind, "topic": topic, "outcome": outcome},
                )
            )
        return plan

    def _name(self) -> tuple[str, str]:
        rng = self.rng
        for attempt in range(40):
            short = rng.choice(NAME_ROOTS) + rng.choice(NAME_ENDINGS)
            if attempt >= 20:
                short += f"-{rng.randint(2, 99)}"
            if short not in self.names:
                break
        else:
            short = f"{short}-{len(self.names) + 1}"
        self.names.add(short)
        slug = short.lower().replace(" ", "-")
        while slug in self.domains:
            slug += "x"
        self.domains.add(slug)
        return short, slug

    def _phone(self, country: str, code: str | None) -> str:
        rng = self.rng
        if country == "ru":
            code = code or str(rng.randint(900, 999))
            return (
                f"+7 ({code}) {rng.randint(100, 999)}-{rng.randint(10, 99)}-{rng.randint(10, 99)}"
            )
        code = code or rng.choice(("50", "63", "66", "67", "68", "73", "93", "97"))
        return f"+380 {code} {rng.randint(100, 999)} {rng.randint(1000, 9999)}"

    def _params(self, segment: str, size: float, country: str) -> dict[str, Any]:
        rng = self.rng
        if segment == "distributor":
            regions = rng.sample(REGION_NAMES[country], rng.randint(1, 4))
            return {
                "turnover": round(size * rng.uniform(40e6, 120e6), -5),
                "sales_reps": max(2, int(size * rng.uniform(4, 18))),
                "own_clients": max(20, int(size * rng.uniform(150, 600))),
                "warehouse_area": round(size * rng.uniform(300, 1500), -1),
                "regions": regions,
            }
        employees = max(10, int(size * rng.uniform(60, 300)))
        kinds = rng.sample(EQUIPMENT, rng.randint(1, 3))
        return {
            "employees": employees,
            "offices": max(1, min(60, int(size * rng.uniform(1, 5)))),
            "equipment": [
                {"type": k, "count": max(1, int(employees / rng.uniform(4, 30)))} for k in kinds
            ],
            "industry": rng.choice(INDUSTRIES),
        }

    def _amount(self, plan: _ClientPlan) -> Decimal:
        rng = self.rng
        if plan.segment == "distributor":
            value = plan.size * rng.uniform(250_000, 900_000)
        elif plan.segment == "corporate":
            value = plan.size * rng.uniform(60_000, 400_000)
        else:
            value = plan.size * rng.uniform(50_000, 500_000)
        return Decimal(max(10_000, round(value, -3)))

    # -- a client's year ---------------------------------------------------------------------
    def _history(self, plan: _ClientPlan) -> None:
        rng = self.rng
        source = plan.card["source"]
        t = self.soon(plan.created_at, 5, 60)
        if plan.touch:
            t = self.later(plan.touch[-1].at, 0, 2)
        direction = "inbound" if source in ("inbound_call", "website") else "outbound"
        if rng.random() < 0.1:  # never got going
            for _ in range(rng.randint(1, 2)):
                outcome = rng.choice(("no_answer", "no_answer", "not_interested"))
                self._log(plan, t, "call", "first_contact", outcome, direction=direction)
                t = self.later(t, 2, 10)
            if rng.random() < 0.4:
                self._client_lost(plan, t, ("no_response", "no_need"))
            return
        first = "interested" if rng.random() < 0.8 else "callback_requested"
        self._log(plan, t, "call", "first_contact", first, direction=direction)
        start = self.later(t, 0, 5)
        for number in range(4):
            if start > self.now:
                return
            result, end = self._deal(plan, number, start)
            if result == "won":
                for _ in range(rng.choice((0, 0, 1, 2))):
                    end = self.later(end, 10, 60)
                    topic, outcome = rng.choice(
                        (("service", "resolved"), ("complaint", "resolved"))
                    )
                    self._log(plan, end, "call", topic, outcome, direction="inbound")
                if rng.random() >= 0.4:
                    return
                start = self.later(end, 20, 120)
            elif result == "lost":
                if rng.random() < 0.12:
                    start = self.later(end, 30, 150)
                    continue
                if rng.random() < 0.35:
                    self._client_lost(plan, self.later(end, 7, 45), LOST_REASONS["proposal"])
                return
            else:
                return

    def _client_lost(self, plan: _ClientPlan, at: dt.datetime, reasons: Iterable[str]) -> None:
        if self.client_reasons is None:
            return
        allowed = [r for r in reasons if not self.client_reasons or r in self.client_reasons]
        reason = self.rng.choice(allowed or self.client_reasons or ["other"])
        plan.ops.append(_Op(at, "client_lost", {"reason": reason}))

    def _reason(self, stage: str, preferred: str | None = None) -> str:
        """A lost reason for ``stage`` from the pipeline's list."""
        if preferred is not None and (not self.reasons or preferred in self.reasons):
            return preferred
        allowed = [r for r in LOST_REASONS[stage] if not self.reasons or r in self.reasons]
        return self.rng.choice(allowed or self.reasons or ["other"])

    def _log(
        self,
        plan: _ClientPlan,
        at: dt.datetime,
        kind: str,
        topic: str,
        outcome: str,
        *,
        deal: int | None = None,
        direction: str | None = None,
        expect: str | None = None,
        task: str | None = None,
        respondents: int = 1,
    ) -> None:
        rng = self.rng
        args: dict[str, Any] = {"kind": kind, "topic": topic, "outcome": outcome}
        if kind == "call":
            args["direction"] = direction or "outbound"
            args["duration"] = 0 if outcome == "no_answer" else rng.randint(2, 25)
        elif kind == "meeting":
            args["duration"] = rng.choice((30, 45, 60, 60, 90, 120))
        if kind in ("call", "meeting", "email") and plan.contacts and outcome != "no_answer":
            count = min(respondents, len(plan.contacts))
            args["respondents"] = sorted(rng.sample(range(len(plan.contacts)), count))
        if expect:
            args["expect"] = expect
        if task:
            args["task"] = task
        plan.ops.append(_Op(at, "log", args, deal=deal))

    def _task_done(
        self, plan: _ClientPlan, key: str, due: dt.datetime, start: dt.datetime, steps: int
    ) -> dt.datetime | None:
        """Plan the steps and the closing of a task; None: it is forgotten (stays open)."""
        rng = self.rng
        skill = self.skill[plan.actor]
        roll = rng.random()
        if roll < 0.04 / skill:
            if steps:
                plan.ops.append(_Op(self.soon(start, 30, 240), "step", {"task": key, "n": 1}))
            return None
        if roll < 0.2 / skill:  # late
            end = self.later(due, 0.2, 4)
        else:
            span = max((due - start).total_seconds() / 60 - 5, 10)
            end = start + dt.timedelta(minutes=rng.uniform(span * 0.2, span))
            end = end.replace(second=0, microsecond=0)
            if end <= start:
                end = start + dt.timedelta(minutes=1)
        for n in range(1, steps + 1):
            at = start + (end - start) * n / (steps + 1)
            plan.ops.append(_Op(at.replace(microsecond=0), "step", {"task": key, "n": n}))
        plan.ops.append(_Op(end, "done", {"task": key}))
        return end

    def _key(self, prefix: str) -> str:
        self.task_no += 1
        return f"{prefix}{self.task_no}"

    # -- one deal down the funnel ---------------------------------------------------------
    def _deal(self, plan: _ClientPlan, k: int, t0: dt.datetime) -> tuple[str, dt.datetime]:
        """Plan deal number ``k`` opened at ``t0``: 'won', 'lost' or 'open', and its last time."""
        rng = self.rng
        skill = self.skill[plan.actor]
        amount = self._amount(plan)
        opened_with = amount if rng.random() < 0.75 else Decimal(0)
        product = rng.choice(PRODUCTS[plan.segment or rng.choice(("distributor", "corporate"))])
        close_by = (t0 + dt.timedelta(days=rng.randint(30, 90))).astimezone(self.tz).date()
        plan.ops.append(
            _Op(
                t0,
                "open",
                {"amount": opened_with, "title": f"{product}: {plan.short}", "close_by": close_by},
                deal=k,
            )
        )
        pending: list[tuple[str, dt.datetime]] = []  # callback tasks: done at the next contact
        invoice: str | None = None
        carried: tuple[str, dt.datetime] | None = None  # a rule's task and when it was made
        t = t0

        def close_pending(at: dt.datetime | None) -> None:
            """Plan the pending callback tasks: done at ``at``, or left open (None)."""
            for key, made in pending:
                if at is None:
                    due = self.later(made, 1, 2)
                elif at - made > dt.timedelta(hours=4) and rng.random() < 0.15 / skill:
                    due = max(
                        made + dt.timedelta(hours=2), at - dt.timedelta(days=rng.uniform(0.5, 3))
                    )
                else:
                    due = self.later(at, 0.1, 1.5)
                args = {"key": key, "title": "Call back", "due": due, "steps": ()}
                plan.ops.append(_Op(made, "task", args, deal=k))
                if at is not None:
                    plan.ops.append(_Op(at, "done", {"task": key}))
            pending.clear()

        def contact(at: dt.datetime, *args: Any, **kwargs: Any) -> None:
            close_pending(at)
            self._log(plan, at, *args, deal=k, **kwargs)

        for stage in STAGES:
            days = self.days[stage]
            roll = rng.random()
            fate = "advance"
            if roll < LOSE[stage] / skill:
                fate = "lose"
            elif roll < LOSE[stage] / skill + STUCK[stage]:
                fate = "stuck"
            if stage == "presentation" and not self.segments and fate == "advance":
                fate = "lose" if rng.random() < 0.65 else "stuck"  # the proposal gate stops it
            stretch = rng.uniform(0.15, 0.95) if rng.random() < 0.85 else rng.uniform(1.1, 2.5)
            fillers = rng.randint(*FILLERS[stage])
            gap = days * stretch / (fillers + 1)
            t = self._enter(plan, k, stage, t, carried)
            if stage == "contract_invoice":
                invoice = f"inv{k}"
            for i in range(fillers):
                t = self.later(t, gap * 0.5, gap * 1.5)
                kind, topic, outcome, direction = self._filler(stage)
                contact(t, kind, topic, outcome, direction=direction, respondents=2)
                if outcome == "callback_requested":
                    pending.append((self._key("cb"), self.soon(t, 1, 3)))
                if stage == "presentation" and i == 0 and opened_with == 0:
                    plan.ops.append(
                        _Op(self.soon(t, 30, 180), "amount", {"amount": amount}, deal=k)
                    )
                    opened_with = amount
            if fate == "stuck":
                close_pending(None)
                return "open", t
            t = self.later(t, gap * 0.5, gap * 1.5)
            if fate == "lose":
                outcome = rng.choice(("not_interested", "not_interested", "no_answer"))
                if stage == "presentation" and outcome == "not_interested" and rng.random() < 0.5:
                    contact(t, "meeting", "presentation", outcome)
                else:
                    contact(t, "call", LOSING_TOPIC[stage], outcome, direction="outbound")
                reason = None
                if outcome == "no_answer" and "no_response" in LOST_REASONS[stage]:
                    reason = "no_response"
                t = self.later(t, 0, 3)
                close_pending(t)
                if invoice is not None:
                    plan.ops.append(_Op(t, "cancel", {"invoice": invoice}, deal=k))
                plan.ops.append(_Op(t, "lose", {"reason": self._reason(stage, reason)}, deal=k))
                return "lost", t
            # -- the decisive step forward
            carried = None
            if stage == "qualification":
                if plan.card["source"] == "event" and rng.random() < 0.5:
                    contact(t, "event", "seminar", "meeting_scheduled", expect="presentation")
                else:
                    contact(t, "call", "qualification", "meeting_scheduled", expect="presentation")
            elif stage == "presentation":
                if opened_with == 0:
                    plan.ops.append(_Op(t, "amount", {"amount": amount}, deal=k))
                    opened_with = amount
                    t = self.soon(t, 5, 30)
                kind, topic = rng.choice(
                    (("meeting", "needs_analysis"), ("call", "presentation"), ("email", "followup"))
                )
                key = self._key("kp")
                carried = (key, t)
                if plan.segment is not None:
                    contact(t, kind, topic, "proposal_requested", expect="proposal", task=key)
                else:  # the gate refuses: fill in the client card, then move by hand
                    contact(t, kind, topic, "proposal_requested", expect="presentation", task=key)
                    plan.segment = rng.choice(("distributor", "corporate"))
                    params = self._params(plan.segment, plan.size, plan.country)
                    t = self.soon(t, 20, 240)
                    plan.ops.append(_Op(t, "card", {"segment": plan.segment, "params": params}))
                    t = self.soon(t, 1, 10)
                    plan.ops.append(_Op(t, "move", {"stage": "proposal"}, deal=k))
            elif stage == "proposal":
                kind, topic = rng.choice(
                    (("call", "negotiation"), ("meeting", "negotiation"), ("email", "followup"))
                )
                key = self._key("ct")
                carried = (key, t)
                contact(t, kind, topic, "agreed", expect="contract_invoice", task=key)
            elif stage == "contract_invoice":
                contact(
                    t, "call", "payment_reminder", "payment_promised", expect="payment_shipment"
                )
            else:  # payment_shipment: paid, shipped, won
                assert invoice is not None
                close_pending(t)
                plan.ops.append(_Op(t, "pay", {"invoice": invoice}, deal=k))
                t = self.later(t, 0.3, 5)
                plan.ops.append(_Op(t, "win", {}, deal=k))
                if rng.random() < 0.6:
                    t = self.soon(t, 30, 600)
                    self._log(plan, t, "email", "thank_you", "sent")
                return "won", t
        raise AssertionError("unreachable")  # pragma: no cover

    def _enter(
        self,
        plan: _ClientPlan,
        k: int,
        stage: str,
        t: dt.datetime,
        carried: tuple[str, dt.datetime] | None,
    ) -> dt.datetime:
        """What is done on entering ``stage`` (the proposal, the invoice); the time after."""
        rng = self.rng
        if stage == "proposal" and carried is not None:  # the rule's task: send the proposal
            key, made = carried
            end = self._task_done(plan, key, made + dt.timedelta(hours=24), t, steps=3)
            sent = end if end is not None else self.later(t, 1, 5)  # sent, task left open
            self._log(plan, sent, "email", "proposal", "sent", deal=k)
            return sent
        if stage == "contract_invoice":  # the rule's task: send the contract and the invoice
            issued = self.soon(t, 20, 600)
            discount = rng.choice((0, 0, 0, 3, 5, 10))
            args = {"invoice": f"inv{k}", "discount": discount}
            plan.ops.append(_Op(issued, "issue", args, deal=k))
            end = self.soon(issued, 2, 15)
            self._log(plan, end, "email", "invoice", "sent", deal=k)
            if carried is not None:
                key, made = carried
                done = self._task_done(plan, key, made + dt.timedelta(hours=24), end, steps=0)
                end = max(end, done or end)
            if rng.random() < 0.4:
                end = self.later(end, 0.5, 3)
                self._log(plan, end, "letter", "contract", "sent", deal=k)
            if rng.random() < 0.4:
                end = self.later(end, 1, 4)
                self._log(plan, end, "meeting", "contract_signing", "contract_signed", deal=k)
            return end
        return t

    def _filler(self, stage: str) -> tuple[str, str, str, str | None]:
        """A routine contact while a deal is in ``stage``: kind, topic, outcome, direction."""
        rng = self.rng
        options: tuple[tuple[str, str, str, str | None], ...]
        if stage == "qualification":
            options = (
                ("call", "first_contact", "no_answer", "outbound"),
                ("call", "qualification", "callback_requested", "outbound"),
                ("call", "qualification", "interested", "outbound"),
                ("call", "qualification", "interested", "inbound"),
                ("email", "first_contact", "sent", None),
            )
        elif stage == "presentation":
            options = (
                ("meeting", "presentation", "needs_identified", None),
                ("meeting", "presentation", "needs_identified", None),
                ("call", "presentation", "interested", "outbound"),
                ("email", "followup", "sent", None),
            )
        elif stage == "proposal":
            options = (
                ("call", "proposal_followup", "callback_requested", "outbound"),
                ("call", "proposal_followup", "interested", "outbound"),
                ("call", "proposal_followup", "interested", "inbound"),
                ("email", "followup", "replied", None),
                ("meeting", "negotiation", "postponed", None),
            )
        elif stage == "contract_invoice":
            options = (
                ("call", "negotiation", "callback_requested", "outbound"),
                ("email", "invoice", "replied", None),
                ("call", "payment_reminder", "no_answer", "outbound"),
            )
        else:
            options = (
                ("call", "payment_reminder", "payment_promised", "outbound"),
                ("email", "invoice", "replied", None),
                ("call", "service", "resolved", "inbound"),
            )
        return rng.choice(options)

    # -- after all clients ----------------------------------------------------------------
    def _number_invoices(self, plans: list[_ClientPlan]) -> None:
        """Number the invoices in the order they are issued, per year (2025-00001 ...)."""
        issued = sorted(
            (
                (op.at, i, op)
                for i, plan in enumerate(plans)
                for op in plan.ops
                if op.name == "issue"
            ),
            key=lambda item: (item[0], item[1]),
        )
        counters: dict[int, int] = {}
        for at, _, op in issued:
            year = at.astimezone(self.tz).year
            counters[year] = counters.get(year, 0) + 1
            op.args["number"] = f"{year}-{counters[year]:05d}"

    def _own_tasks(self) -> list[_Script]:
        """Monthly planning tasks of the managers and the head: on time, late, or open."""
        rng = self.rng
        first = self.now.astimezone(self.tz).replace(
            day=1, hour=9, minute=0, second=0, microsecond=0
        )
        months = []
        for back in range(11, -1, -1):
            year, month = first.year, first.month - back
            while month < 1:
                year, month = year - 1, month + 12
            months.append(first.replace(year=year, month=month))
        people = [(login, "Monthly plan", PLAN_STEPS, self.skill[login]) for login, *_ in MANAGERS]
        people.append((HEAD[0], "Department plan and bonuses", HEAD_STEPS, 1.2))
        scripts = []
        for login, title, steps, skill in people:
            script = _Script(actor=login)
            for start in months:
                start_utc = self.workday(start.astimezone(dt.UTC))
                due = start_utc + dt.timedelta(days=3)
                key = f"plan{start:%Y%m}"
                args = {
                    "key": key,
                    "title": f"{title} for {MONTHS[start.month - 1]} {start.year}",
                    "due": due,
                    "steps": steps,
                    "client": False,
                }
                script.ops.append(_Op(start_utc, "task", args))
                roll = rng.random()
                if roll < 0.03 / skill:
                    continue  # forgotten: stays open
                if roll < 0.15 / skill:
                    end = self.later(due, 0.5, 5)
                else:
                    end = min(self.later(start_utc, 0.2, 2.5), due - dt.timedelta(hours=1))
                for n in range(1, len(steps) + 1):
                    at = start_utc + (end - start_utc) * n / (len(steps) + 1)
                    script.ops.append(_Op(at.replace(microsecond=0), "step", {"task": key, "n": n}))
                script.ops.append(_Op(end, "done", {"task": key}))
            script.ops = sorted((op for op in script.ops if op.at <= self.now), key=lambda o: o.at)
            scripts.append(script)
        return scripts

    def _mailings(self, plans: list[_ClientPlan]) -> list[_Script]:
        """The marketer's newsletters and promotions, every two months, to part of the base."""
        rng = self.rng
        sends = []
        for back in range(6):
            day = self.now - dt.timedelta(days=12 + 60 * back + rng.randint(0, 10))
            local = day.astimezone(self.tz)
            local += dt.timedelta(days=(1 - local.weekday()) % 7)  # a Tuesday
            local = local.replace(hour=10, minute=0, second=0, microsecond=0)
            at = local.astimezone(dt.UTC)
            if at <= self.now:
                sends.append((at, rng.choice(("newsletter", "promotion", "announcement"))))
        sends.sort()
        outcomes = [o for o, _ in MAILING_OUTCOMES]
        weights = [w for _, w in MAILING_OUTCOMES]
        scripts = []
        unsubscribed: set[int] = set()
        per_client: dict[int, _Script] = {}
        for at, topic in sends:
            for i, plan in enumerate(plans):
                if plan.created_at >= at or i in unsubscribed or rng.random() >= 0.35:
                    continue
                outcome = rng.choices(outcomes, weights)[0]
                if outcome == "unsubscribed":
                    unsubscribed.add(i)
                script = per_client.setdefault(i, _Script(actor=MARKETER[0]))
                script.ops.append(
                    _Op(
                        at + dt.timedelta(seconds=rng.randint(0, 600)),
                        "log",
                        {"kind": "mailing", "topic": topic, "outcome": outcome},
                    )
                )
        for i in sorted(per_client):
            per_client[i].of = plans[i]
            scripts.append(per_client[i])
        return scripts


# == running: the plan through the session API ===========================================
class _Runner:
    def __init__(self, crm: CRM, pipeline: Pipeline, now: dt.datetime, rng: random.Random) -> None:
        self.crm = crm
        self.rng = rng  # for plugins' sample data (crmkit_sample_client)
        self.pipeline = pipeline
        self.now = now
        self.order = {s.name: s.order for s in pipeline.stages}
        self.made = dict.fromkeys(COUNT_KEYS, 0)
        self.deals: list[_DealState] = []
        self.tasks: dict[int, tuple[dt.datetime, dt.datetime | None, bool | None]] = {}
        self.invoices: dict[int, str] = {}
        give_up: list[str] = [r for r in ("bad_fit", "other") if r in pipeline.lost_reasons]
        self.give_up_reason = (give_up or list(pipeline.lost_reasons) or ["other"])[0]

    def run(
        self, plans: list[_ClientPlan], user_scripts: list[_Script], mailings: list[_Script]
    ) -> None:
        with self.crm.session() as s:
            if s.clients.count() or s.teams.list():
                raise Conflict(
                    "sample data goes into a new deployment; this one already has clients or teams",
                    field="sample",
                )
            self._people(s)
        # clients enter the base in time order, each made by who found it
        for actor, group in _runs(plans, lambda p: p.creator):
            with self.crm.session(as_user=actor) as s:
                for plan in group:
                    self._create(s, plan)
        # then each manager works their clients: deals, interactions, invoices, tasks
        for login, _, _ in MANAGERS:
            mine = [p for p in plans if p.actor == login]
            for start in range(0, len(mine), BATCH):
                with self.crm.session(as_user=login) as s:
                    for plan in mine[start : start + BATCH]:
                        self._play(s, plan)
        for script in user_scripts:
            with self.crm.session(as_user=script.actor) as s:
                self._play(s, script)
        for start in range(0, len(mailings), BATCH * 4):
            with self.crm.session(as_user=MARKETER[0]) as s:
                for script in mailings[start : start + BATCH * 4]:
                    assert script.of is not None
                    script.client_id = script.of.client_id
                    self._play(s, script)

    # -- people ------------------------------------------------------------------------------
    def _people(self, s: Session) -> None:
        s.teams.add(DEPARTMENT)
        for team in (KEY_ACCOUNTS, REGIONS):
            s.teams.add(team, parent=DEPARTMENT)
        self.made["teams"] = 3
        s.users.add(HEAD[0], role="head", name=HEAD[1], team=DEPARTMENT)
        s.users.add(MARKETER[0], role="marketer", name=MARKETER[1], team=DEPARTMENT)
        for login, name, team in MANAGERS:
            s.users.add(login, role="manager", name=name, team=team)
        self.made["users"] = 2 + len(MANAGERS)

    def _create(self, s: Session, plan: _ClientPlan) -> None:
        client = s.clients.create(**plan.card)
        plan.client_id = client.id
        if s.access.allows("update", "client", s.access.view("client", client.id) or {}):
            # a marketer's lead gets its plugins' data later, from its manager (the "card" step)
            s.crm.plugins.sample_client(session=s, client=client, random=self.rng)
        self.made["clients"] += 1
        for contact in plan.contacts:
            plan.contact_ids.append(s.contacts.add(client.id, **contact).id)
            self.made["contacts"] += 1
        for op in plan.touch:
            self._op(s, plan, op)

    # -- one script ------------------------------------------------------------------------
    def _play(self, s: Session, script: _Script) -> None:
        for op in script.ops:
            self._op(s, script, op)

    def _op(self, s: Session, script: _Script, op: _Op) -> None:
        deal = None
        if op.deal is not None:
            deal = script.deals.get(op.deal)
            if op.name != "open" and (deal is None or deal.status != "open"):
                return  # the deal ended otherwise than planned; what followed did not happen
        name, args, at = op.name, op.args, op.at
        if name == "log":
            self._log(s, script, op, deal)
        elif name == "open":
            assert script.client_id is not None and op.deal is not None
            made = s.deals.open(
                script.client_id,
                pipeline=self.pipeline.name,
                amount=args["amount"],
                title=args["title"],
                expected_close=args["close_by"],
                at=at,
            )
            state = _DealState(id=made.id, stage=made.stage, entered=at)
            script.deals[op.deal] = state
            self.deals.append(state)
            self.made["deals"] += 1
        elif name == "amount":
            assert deal is not None
            s.deals.update(deal.id, amount=args["amount"])
        elif name == "card":
            assert script.client_id is not None
            card = s.clients.update(
                script.client_id, segment=args["segment"], params=args["params"]
            )
            s.crm.plugins.sample_client(session=s, client=card, random=self.rng)
        elif name == "move":
            assert deal is not None
            self._ensure(s, script, deal, args["stage"], at)
        elif name == "issue":
            assert deal is not None
            amount = s.deals.get(deal.id).amount
            amount = (amount * (100 - args["discount"]) / 100).quantize(Decimal("0.01"))
            invoice = s.invoices.issue(deal.id, amount, number=args["number"], at=at)
            script.invoices[args["invoice"]] = invoice.id
            self.invoices[invoice.id] = "issued"
            deal.open_invoices.append(args["invoice"])
            self.made["invoices"] += 1
        elif name in ("pay", "cancel"):
            assert deal is not None
            key = args["invoice"]
            if key in deal.open_invoices:
                invoice_id = script.invoices[key]
                if name == "pay":
                    s.invoices.pay(invoice_id, at=at)
                    self.invoices[invoice_id] = "paid"
                else:
                    s.invoices.cancel(invoice_id, at=at)
                    self.invoices[invoice_id] = "cancelled"
                deal.open_invoices.remove(key)
        elif name == "win":
            assert deal is not None
            if self._ensure(s, script, deal, self.pipeline.stages[-1].name, at):
                change = s.deals.win(deal.id, at=at)
                self._moved(deal, change.to_stage, change.at)
        elif name == "lose":
            assert deal is not None
            change = s.deals.lose(deal.id, args["reason"], at=at)
            self._moved(deal, change.to_stage, change.at)
        elif name == "task":
            task = s.tasks.add(
                args["title"],
                due=args["due"],
                assignee=script.actor,
                client_id=script.client_id if args.get("client", True) else None,
                deal_id=deal.id if deal is not None else None,
                steps=args["steps"],
                at=at,
            )
            script.tasks[args["key"]] = task.id
            self.tasks[task.id] = (task.due_at, None, None)
            self.made["tasks"] += 1
        elif name == "step":
            task_id = script.tasks.get(args["task"])
            # a rule's task may have other steps than planned (a gate asked for the card)
            if (
                task_id is not None
                and self.tasks[task_id][1] is None
                and args["n"] <= len(s.tasks.get(task_id).steps)
            ):
                s.tasks.step(task_id, args["n"], at=at)
        elif name == "done":
            task_id = script.tasks.get(args["task"])
            if task_id is not None and self.tasks[task_id][1] is None:
                force = args.get("force", False)
                if not force:  # steps the plan did not foresee are done along the way
                    current = s.tasks.get(task_id)
                    for n, step in enumerate(current.steps, start=1):
                        if step.done_at is None:
                            s.tasks.step(task_id, n, at=at)
                task = s.tasks.done(task_id, at=at, force=force)
                self.tasks[task_id] = (task.due_at, task.done_at, task.done_late)
        elif name == "client_lost":
            assert script.client_id is not None
            if self.crm.lifecycle is not None:
                s.clients.move(script.client_id, LOST, at=at, reason=args["reason"])
        else:  # pragma: no cover
            raise AssertionError(f"unknown sample operation {name!r}")

    def _log(self, s: Session, script: _Script, op: _Op, deal: _DealState | None) -> None:
        args = op.args
        assert script.client_id is not None
        logged = s.interactions.log(
            script.client_id,
            args["kind"],
            topic=args["topic"],
            outcome=args["outcome"],
            direction=args.get("direction"),
            at=op.at,
            duration=args.get("duration"),
            deal_id=deal.id if deal is not None else None,
            respondents=[script.contact_ids[i] for i in args.get("respondents", ())],
        )
        self.made["interactions"] += 1
        for change in logged.changes:
            if deal is not None and change.entity == "deal" and change.entity_id == deal.id:
                self._moved(deal, change.to_stage, change.at)
        for task in logged.tasks:
            self.tasks[task.id] = (task.due_at, None, None)
            self.made["tasks"] += 1
            if args.get("task") and deal is not None and task.deal_id == deal.id:
                script.tasks.setdefault(args["task"], task.id)
        if deal is not None and args.get("expect"):
            self._ensure(s, script, deal, args["expect"], op.at)

    def _moved(self, deal: _DealState, stage: str, at: dt.datetime) -> None:
        deal.stage, deal.entered = stage, at
        if stage in TERMINAL:
            deal.status = stage

    def _ensure(
        self, s: Session, script: _Script, deal: _DealState, stage: str, at: dt.datetime
    ) -> bool:
        """Make sure the deal has reached ``stage``, moving it by hand when a rule did not.

        A move that the pipeline refuses (a gate this sample did not foresee)
        ends the deal as lost, so that nothing planned after it happens.
        """
        if deal.status != "open":
            return False
        if self.order[deal.stage] >= self.order[stage]:
            return True
        targets = [
            st.name
            for st in self.pipeline.stages
            if self.order[deal.stage] < st.order <= self.order[stage]
        ]
        if self.pipeline.allow_skip:
            targets = targets[-1:]
        for target in targets:
            try:
                with s.connection.begin_nested():
                    change = s.deals.move(deal.id, target, at=at)
            except ValidationError as exc:
                for key in list(deal.open_invoices):
                    invoice_id = script.invoices[key]
                    s.invoices.cancel(invoice_id, at=at)
                    self.invoices[invoice_id] = "cancelled"
                    deal.open_invoices.remove(key)
                change = s.deals.lose(deal.id, self.give_up_reason, at=at, note=str(exc)[:300])
                self._moved(deal, change.to_stage, change.at)
                return False
            self._moved(deal, change.to_stage, change.at)
        return True

    # -- the result ------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        out = dict(self.made)
        out["deals_won"] = sum(d.status == WON for d in self.deals)
        out["deals_lost"] = sum(d.status == LOST for d in self.deals)
        out["deals_open"] = sum(d.status == "open" for d in self.deals)
        stalled = 0
        for d in self.deals:
            days = self.pipeline.stage(d.stage).days if d.status == "open" else None
            if days and self.now - d.entered > dt.timedelta(days=days):
                stalled += 1
        out["deals_stalled"] = stalled
        out["invoices_paid"] = sum(v == "paid" for v in self.invoices.values())
        out["tasks_overdue"] = sum(
            (done is None and due < self.now) or bool(late)
            for due, done, late in self.tasks.values()
        )
        return {key: out[key] for key in COUNT_KEYS}


def _runs(
    plans: list[_ClientPlan], actor: Callable[[_ClientPlan], str]
) -> Iterator[tuple[str, list[_ClientPlan]]]:
    """Consecutive plans with the same actor, in batches of at most :data:`BATCH` * 2."""
    group: list[_ClientPlan] = []
    for plan in plans:
        if group and (actor(group[0]) != actor(plan) or len(group) >= BATCH * 2):
            yield actor(group[0]), group
            group = []
        group.append(plan)
    if group:
        yield actor(group[0]), group
