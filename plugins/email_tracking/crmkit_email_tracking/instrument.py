"""Making a rendered message trackable: tracked links, the open pixel, the hosted document.

:func:`instrument` rewrites every ``http(s)`` link of the HTML body (and
every URL of the text body) into ``/t/c/TOKEN``, whose token carries the
link's index; the targets are kept with the message (``email_outbox.links``),
so the redirect never takes its target from the request. It adds the open
pixel ``/t/o/TOKEN.gif`` at the end of the HTML body. With tracking off
(``[plugin.email_tracking] tracking = false``) the bodies are left as they
are.
"""

from __future__ import annotations

import html as htmllib
import re
from typing import TYPE_CHECKING

from attrs import frozen

from . import settings, signing

if TYPE_CHECKING:  # pragma: no cover
    from crmkit import CRM

_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"'\s<>]+)\2""", re.IGNORECASE)
_TEXT_URL = re.compile(r"""https?://[^\s<>"')\]]+""")
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
#: The longest a tracked link's target may be (longer ones are left untracked).
MAX_LINK = 2000
DAY = 86400.0


@frozen
class Instrumented:
    """The bodies to send and the link targets to keep (by index)."""

    html: str
    text: str
    links: list[str]


def _ttl(crm: CRM) -> float:
    return settings.load(crm).token_days * DAY


def pixel_url(crm: CRM, message_id: int) -> str:
    """The open pixel's address for a message."""
    token = signing.keys(crm).sign(signing.OPEN, message_id, ttl=_ttl(crm))
    return f"{crm.config.public_url}/t/o/{token}.gif"


def click_url(crm: CRM, message_id: int, link: int) -> str:
    """The tracked address of link ``link`` of a message."""
    token = signing.keys(crm).sign(signing.CLICK, message_id, link=link, ttl=_ttl(crm))
    return f"{crm.config.public_url}/t/c/{token}"


def document_url(crm: CRM, message_id: int) -> str:
    """The address of the document hosted with a message (``/p/TOKEN``)."""
    token = signing.keys(crm).sign(signing.DOCUMENT, message_id, ttl=_ttl(crm))
    return f"{crm.config.public_url}/p/{token}"


def instrument(crm: CRM, message_id: int, html: str, text: str) -> Instrumented:
    """Rewrite the links of both bodies into tracked ones and add the pixel to the HTML."""
    if not settings.load(crm).tracking:
        return Instrumented(html=html, text=text, links=[])
    public = crm.config.public_url
    links: list[str] = []
    index: dict[str, int] = {}

    def tracked(url: str) -> str:
        if len(url) > MAX_LINK or url.startswith(public + "/p/"):
            return url  # too long to keep, or the hosted document (tracked by its own pages)
        if url not in index:
            index[url] = len(links)
            links.append(url)
        return click_url(crm, message_id, index[url])

    def in_html(match: re.Match[str]) -> str:
        url = htmllib.unescape(match.group(3))
        return f"{match.group(1)}{match.group(2)}{htmllib.escape(tracked(url))}{match.group(2)}"

    html = _HREF.sub(in_html, html)
    text = _TEXT_URL.sub(lambda m: tracked(m.group(0)), text)
    pixel = (
        f'<img src="{pixel_url(crm, message_id)}" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px">'
    )
    found = list(_BODY_END.finditer(html))
    if found:
        at = found[-1].start()
        html = html[:at] + pixel + html[at:]
    else:
        html += pixel
    return Instrumented(html=html, text=text, links=links)
