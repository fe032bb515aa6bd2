"""A fake SMTP server for tests: ``aiosmtpd`` on 127.0.0.1 that keeps what it receives.

    with FakeSmtpServer() as smtp:
        send_mail(host=smtp.host, port=smtp.port, ...)
        msg = smtp.messages[0]                  # email.message.EmailMessage
        assert msg["Subject"] == "..."
        [att] = list(msg.iter_attachments())
        assert att.get_content() == b"..."

Messages are parsed with ``email.message_from_bytes(..., policy=email.policy.default)``
after turning the wire's CRLF line endings into LF.  The SMTP envelope (MAIL FROM /
RCPT TO / the raw CRLF bytes) is in ``smtp.envelopes``.
No TLS and no AUTH are offered.

``smtp.refuse("nobody@school.test", "550 5.1.1 No such user")`` makes the server answer that
reply to ``RCPT TO`` for that address (a 4xx reply for a temporary refusal); other recipients
are accepted as usual. ``smtp.data_delay = 1.5`` makes it take that many seconds to accept
each message (a slow server).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Dict, List, Optional

from aiosmtpd.controller import Controller

__all__ = ["FakeSmtpServer", "ReceivedEnvelope", "free_port"]


@dataclass(frozen=True)
class ReceivedEnvelope:
    mail_from: str
    rcpt_tos: List[str]
    data: bytes
    message: EmailMessage


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (aiosmtpd cannot listen on port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class _Handler:
    def __init__(self, owner: "FakeSmtpServer") -> None:
        self._owner = owner

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        refusal = self._owner._refusal(address)
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook
        if self._owner.data_delay:
            await asyncio.sleep(self._owner.data_delay)
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        # SMTP line endings are CRLF; parse with LF so get_content() reads like local text.
        # (Binary attachments are base64/quoted-printable on the wire, so this is safe.)
        message = email.message_from_bytes(data.replace(b"\r\n", b"\n"),
                                           policy=email.policy.default)
        self._owner._store(ReceivedEnvelope(
            mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos),
            data=data, message=message))
        return "250 Message accepted for delivery"


class FakeSmtpServer:
    """aiosmtpd ``Controller`` on 127.0.0.1 with a free port; usable as a context manager."""

    host = "127.0.0.1"

    def __init__(self, port: Optional[int] = None) -> None:
        self._requested_port = port
        self.port: int = port or 0
        self._lock = threading.Lock()
        self._envelopes: List[ReceivedEnvelope] = []
        self._refusals: Dict[str, str] = {}
        self.data_delay = 0.0
        self._controller: Optional[Controller] = None

    def refuse(self, address: str, reply: str = "550 5.1.1 Mailbox unavailable") -> None:
        """Answer ``reply`` (e.g. '550 ...' or '450 ...') to ``RCPT TO:<address>``."""
        with self._lock:
            self._refusals[address.lower()] = reply

    def _refusal(self, address: str) -> Optional[str]:
        with self._lock:
            return self._refusals.get(address.lower())

    def _store(self, env: ReceivedEnvelope) -> None:
        with self._lock:
            self._envelopes.append(env)

    def start(self) -> "FakeSmtpServer":
        if self._controller is not None:
            return self
        attempts = 1 if self._requested_port else 5
        for attempt in range(attempts):
            port = self._requested_port or free_port(self.host)
            controller = Controller(_Handler(self), hostname=self.host, port=port)
            try:
                controller.start()
            except Exception:
                # Port grabbed by someone else between free_port() and bind: retry.
                try:
                    controller.stop(no_assert=True)
                except Exception:
                    pass
                if attempt == attempts - 1:
                    raise
                continue
            self._controller, self.port = controller, port
            return self
        raise RuntimeError("unreachable")

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> "FakeSmtpServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def envelopes(self) -> List[ReceivedEnvelope]:
        with self._lock:
            return list(self._envelopes)

    @property
    def messages(self) -> List[EmailMessage]:
        """Received messages (snapshot), parsed with ``email.policy.default``."""
        return [e.message for e in self.envelopes]

    def clear(self) -> None:
        with self._lock:
            self._envelopes.clear()
