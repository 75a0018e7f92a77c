"""Who fetched the pixel, followed the link or opened the document: a person or a machine.

Mail is fetched by machines as often as by people: Apple Mail's privacy
protection loads every image of every message through Apple's proxy when the
message arrives, Gmail loads images through its own proxy (but only when the
reader opens the message, so that counts as an open), and corporate link
scanners follow every link before the reader sees it. Every hit is stored
with one of :data:`~crmkit_email_tracking.tables.CLASSIFICATIONS` and the
reasons for it; only ``human`` and ``gmail_proxy`` events count as the
recipient's own (:data:`COUNTED`).

The rules, in order (the first that matches decides):

``scanner``
    a ``HEAD`` request; a prefetch (``Sec-Purpose: prefetch``,
    ``Purpose: prefetch``, ``X-Moz: prefetch``); a known link scanner's user
    agent; a click within :data:`SCANNER_CLICK_SECONDS` of delivery.
``gmail_proxy``
    ``GoogleImageProxy`` in the user agent.
``apple_mpp``
    the bare user agent ``Mozilla/5.0`` that Apple's proxy sends, or an
    address in Apple's network (17.0.0.0/8).
``bot``
    no user agent, or a program's (``curl``, ``python-requests``, ``bot`` ...).
``human``
    anything else: a browser or a mail program.

Headless Chromium (``HeadlessChrome`` in the user agent) is not called a bot
by its name alone: link scanners that use it give themselves away by the
rules above (timing, prefetch), and the project's own tests read mail with it.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping

#: Classifications that count as the recipient's own open, click or reading.
COUNTED = frozenset({"human", "gmail_proxy"})
#: A click sooner than this after delivery is a link scanner's, not a reader's.
SCANNER_CLICK_SECONDS = 10.0
#: Apple's network, where Mail Privacy Protection's proxies fetch from.
APPLE_NETWORK = ipaddress.ip_network("17.0.0.0/8")

# matched against the lower-cased user agent (no IGNORECASE: several times faster)
_SCANNERS = re.compile(
    r"barracuda|mimecast|proofpoint|safelinks|microsoft office protection|symantec|"
    r"messagelabs|trend ?micro|forcepoint|sophos|fireeye|ironport|cisco|zscaler|"
    r"urlscan|checkpoint|avanan|virustotal|linkscan"
)
_PROGRAMS = re.compile(
    r"bot\b|bot/|crawler|spider|curl/|wget/|python-requests|python-urllib|httpx|aiohttp|"
    r"go-http-client|java/|okhttp|libwww|scrapy|headless(?!chrome)|phantomjs|^-$"
)


def classify(
    kind: str,
    *,
    method: str,
    headers: Mapping[str, str],
    ip: str | None,
    seconds_since_delivery: float | None = None,
) -> tuple[str, list[str]]:
    """The classification of one hit and the reasons for it (empty for ``human``).

    ``kind`` is ``open``, ``click`` or ``page_view``; ``headers`` are the
    request's (lower-case names); ``seconds_since_delivery`` is how long
    after the message was sent the hit came (None when unknown).
    """
    agent = (headers.get("user-agent") or "").strip()
    purposes = tuple(headers.get(name) or "" for name in PURPOSE_HEADERS)
    found, reasons = _by_request(method.upper(), agent, purposes)
    timed = (
        kind == "click"
        and seconds_since_delivery is not None
        and 0 <= seconds_since_delivery < SCANNER_CLICK_SECONDS
    )
    if timed:
        reasons = [
            *(reasons if found == "scanner" else []),
            f"clicked {seconds_since_delivery:.1f} s after delivery "
            f"(sooner than {SCANNER_CLICK_SECONDS:g} s)",
        ]
        return "scanner", reasons
    if found in ("scanner", "gmail_proxy"):
        return found, list(reasons)
    if ip is not None and ip.startswith("17.") and _in_apple_network(ip):
        reasons = [*(reasons if found == "apple_mpp" else []), APPLE_NETWORK_REASON]
        return "apple_mpp", reasons
    return found, list(reasons)


#: The request headers that mark a prefetch.
PURPOSE_HEADERS = ("sec-purpose", "purpose", "x-moz", "x-purpose")
APPLE_NETWORK_REASON = "an address in Apple's network 17.0.0.0/8"


@functools.lru_cache(maxsize=4096)
def _by_request(method: str, agent: str, purposes: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """What the method, user agent and prefetch headers alone say (cached: they repeat)."""
    reasons: list[str] = []
    if method == "HEAD":
        reasons.append("a HEAD request (a link checker, not a browser)")
    for name, value in zip(PURPOSE_HEADERS, purposes, strict=True):
        if "prefetch" in value.lower():
            reasons.append(f"a prefetch ({name}: {value})")
    lowered = agent.lower()
    if agent and _SCANNERS.search(lowered):
        reasons.append(f"a link scanner's user agent ({agent[:80]})")
    if reasons:
        return "scanner", tuple(reasons)
    if "googleimageproxy" in lowered:
        return "gmail_proxy", ("Gmail's image proxy (counts: Gmail fetches when the mail is read)",)
    if agent == "Mozilla/5.0":
        return "apple_mpp", ("the bare user agent 'Mozilla/5.0' of Apple Mail Privacy Protection",)
    if not agent:
        return "bot", ("no user agent",)
    if _PROGRAMS.search(lowered):
        return "bot", (f"a program's user agent ({agent[:80]})",)
    return "human", ()


def _in_apple_network(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in APPLE_NETWORK
    except ValueError:
        return False


@functools.lru_cache(maxsize=4096)
def truncate_ip(ip: str | None) -> str | None:
    """``ip`` with its host part zeroed: the /24 of IPv4, the /48 of IPv6."""
    if ip is None:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)
