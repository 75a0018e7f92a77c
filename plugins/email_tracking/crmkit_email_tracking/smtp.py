"""Delivering one message by SMTP, and telling a temporary failure from a permanent one.

:func:`build` makes the :class:`~email.message.EmailMessage` (a
``multipart/alternative`` of the text and the HTML body), :func:`deliver`
hands it to the server that ``[plugin.email_tracking.smtp]`` names: plain,
``STARTTLS`` or implicit TLS, with a login when a ``username`` is set.

Every failure comes out as :class:`DeliveryError` with the server's reply
(``451 4.3.0 try later``) or what went wrong on the way, and whether it is
worth trying again: 4xx replies, refused or dropped connections and timeouts
are temporary; 5xx replies are permanent, except a refused login (535), which
is the deployment's problem rather than the message's and is retried.
"""

from __future__ import annotations

import datetime as dt
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

from .settings import SMTP


class DeliveryError(Exception):
    """A message could not be delivered: ``reply`` says why, ``temporary`` whether to retry."""

    def __init__(self, reply: str, *, temporary: bool, code: int | None = None) -> None:
        super().__init__(reply)
        self.reply = reply
        self.temporary = temporary
        self.code = code


def message_id(sender: str) -> str:
    """A new ``Message-ID`` (``<...@domain>``) in the domain of the From address."""
    address = parseaddr(sender)[1]
    domain = address.rpartition("@")[2] or "localhost"
    return make_msgid(domain=domain)


def build(
    *,
    sender: str,
    to: str,
    subject: str,
    text: str,
    html: str,
    msgid: str,
    date: dt.datetime | None = None,
) -> EmailMessage:
    """The message to send: headers, then the text and the HTML as alternatives."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date or dt.datetime.now(dt.UTC))
    msg["Message-ID"] = msgid
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".strip()


def deliver(config: SMTP, msg: EmailMessage, *, password: str | None = None) -> None:
    """Send ``msg`` through the configured server; :class:`DeliveryError` when it is not taken."""
    sender = parseaddr(str(msg["From"]))[1]
    recipients = [parseaddr(str(msg["To"]))[1]]
    try:
        if config.security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                config.host,
                config.port,
                timeout=config.timeout,
                context=ssl.create_default_context(),
            )
        else:
            client = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
        with client:
            client.ehlo()
            if config.security == "starttls":
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
            if config.username:
                client.login(config.username, password or "")
            client.send_message(msg, from_addr=sender, to_addrs=recipients)
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        raise DeliveryError(_reply(code, text), temporary=400 <= code < 500, code=code) from None
    except smtplib.SMTPAuthenticationError as exc:
        reply = _reply(exc.smtp_code, exc.smtp_error)
        raise DeliveryError(f"login refused: {reply}", temporary=True, code=exc.smtp_code) from None
    except smtplib.SMTPResponseException as exc:
        code = exc.smtp_code
        raise DeliveryError(
            _reply(code, exc.smtp_error), temporary=not 500 <= code < 600, code=code
        ) from None
    except smtplib.SMTPServerDisconnected as exc:
        raise DeliveryError(f"connection dropped: {exc}", temporary=True) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryError(f"server does not support it: {exc}", temporary=True) from None
    except ssl.SSLError as exc:
        raise DeliveryError(f"TLS failed: {exc}", temporary=True) from None
    except TimeoutError:
        raise DeliveryError(
            f"timed out after {config.timeout:g}s talking to {config.host}:{config.port}",
            temporary=True,
        ) from None
    except ConnectionError as exc:  # refused, reset, aborted
        raise DeliveryError(
            f"cannot reach {config.host}:{config.port}: {exc.strerror or exc}", temporary=True
        ) from None
    except (OSError, smtplib.SMTPException) as exc:  # DNS failures, unreachable networks ...
        raise DeliveryError(
            f"cannot deliver through {config.host}:{config.port}: {exc}", temporary=True
        ) from None
