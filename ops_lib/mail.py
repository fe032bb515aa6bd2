"""Email: SMTP with the standard library, or `.eml` files in the outbox when none is configured."""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from .errors import JobFailed
from .settings import Settings

log = logging.getLogger(__name__)


class SmtpUnreachable(ConnectionError):
    """No SMTP session could be opened (refused, timed out, no greeting): nothing was sent."""


class SmtpLoginRefused(JobFailed):
    """The SMTP server refused our login or STARTTLS: the configuration is wrong, not a message,
    so retrying message by message cannot help."""


# Set on an exception Mailer.send raises: False when it failed before the DATA command, so the
# server never took the message. Absent means unknown (treated as possibly delivered).
DATA_SENT = "smtp_data_sent"


def never_reached_server(exc: BaseException) -> bool:
    """True when a message provably never reached an SMTP server and a later try may succeed:
    no connection (refused, DNS failure, timeout, no greeting), our login refused, or a
    temporary (4xx) refusal or a lost connection before DATA. False for anything after DATA was
    sent (the message may have been delivered: send it at most once), for a permanent (5xx)
    refusal and for a message that cannot be built (a bad address)."""
    if isinstance(exc, (SmtpUnreachable, SmtpLoginRefused, smtplib.SMTPConnectError,
                        socket.gaierror, ConnectionRefusedError)):
        return True
    return getattr(exc, DATA_SENT, True) is False and _temporary_before_data(exc)


def _temporary_before_data(exc: BaseException) -> bool:
    """Whether an error before DATA may pass on another try: a 4xx reply or a lost connection."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return bool(codes) and all(400 <= code < 500 for code in codes)
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    if isinstance(exc, smtplib.SMTPException):  # (an OSError too) e.g. SMTPUTF8 not supported
        return isinstance(exc, smtplib.SMTPServerDisconnected)
    return isinstance(exc, OSError)  # the connection broke before DATA


class _Smtp(smtplib.SMTP):
    """smtplib.SMTP that remembers whether the DATA command was sent for the current message."""

    data_sent = False

    def data(self, msg):  # noqa: D102 - smtplib's own
        self.data_sent = True
        return super().data(msg)


class Mailer:
    """Sends messages over one SMTP connection per batch, or writes them to the outbox."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._smtp: _Smtp | None = None

    @property
    def uses_outbox(self) -> bool:
        return not self.settings.smtp_host

    @property
    def outbox(self) -> Path:
        return Path(self.settings.outbox_dir) / "email"

    def new_message(self, to: str, subject: str, body: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.settings.smtp_from
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = make_msgid(domain=self.settings.smtp_from.split("@")[-1])
        message.set_content(body)
        return message

    def send(self, message: EmailMessage) -> str:
        """Send (or write) one message; returns where it went."""
        if self.uses_outbox:
            self.outbox.mkdir(parents=True, exist_ok=True)
            path = self.outbox / f"{uuid.uuid4().hex}.eml"
            path.write_bytes(bytes(message))
            return str(path)
        smtp = self._connection()
        smtp.data_sent = False
        try:
            smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            setattr(exc, DATA_SENT, smtp.data_sent)  # the same exception, for its handlers
            raise
        return f"smtp://{self.settings.smtp_host}:{self.settings.smtp_port}"

    def _connection(self) -> _Smtp:
        if self._smtp is None:
            s = self.settings
            try:
                smtp = _Smtp(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds)
            except (OSError, smtplib.SMTPException) as exc:
                raise SmtpUnreachable(
                    f"cannot reach SMTP {s.smtp_host}:{s.smtp_port}: {exc}") from exc
            step = "STARTTLS"
            try:
                if s.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context())
                step = "login"
                if s.smtp_user:
                    smtp.login(s.smtp_user, s.smtp_password or "")
            except (smtplib.SMTPAuthenticationError, smtplib.SMTPNotSupportedError) as exc:
                smtp.close()
                raise SmtpLoginRefused(
                    f"SMTP {s.smtp_host}:{s.smtp_port} refused our {step} "
                    f"(smtp_user={s.smtp_user or '-'}): {_reply_text(exc)}") from exc
            except BaseException:
                smtp.close()  # no half-open connection left behind (timeouts, TLS errors)
                raise
            self._smtp = smtp
        return self._smtp

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass  # the connection is gone either way
            finally:
                self._smtp.close()
                self._smtp = None

    def __enter__(self) -> "Mailer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def smtp_error_text(exc: BaseException) -> str:
    """An email failure as one line: 'SMTPRecipientsRefused: 450 4.2.1 Mailbox busy'."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused) and exc.recipients:
        code, message = next(iter(exc.recipients.values()))
        reply = _reply_text(smtplib.SMTPResponseException(code, message))
    else:
        reply = _reply_text(exc)
    return f"{type(exc).__name__}: {reply}"


def _reply_text(exc: BaseException) -> str:
    """An SMTP error as one line: '535 5.7.8 Authentication failed'."""
    code, message = getattr(exc, "smtp_code", None), getattr(exc, "smtp_error", None)
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    text = f"{code} {message}" if code and message else str(exc)
    return " ".join(text.split())
