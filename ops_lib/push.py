"""Push delivery: Firebase Cloud Messaging through firebase-admin, or an outbox of JSON lines.

Each message's outcome is classified the way SPEC.md says: token errors deactivate the device,
transient ones retry on a later run, an authentication error stops the stage.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from pathlib import Path
from typing import NamedTuple, Sequence

from .errors import ConfigError
from .settings import Settings
from .timeutil import utcnow

log = logging.getLogger(__name__)

SENT = "sent"
DEACTIVATE = "deactivate"  # the token is dead: deactivate the device, give up the delivery
RETRY = "retry"  # transient: try again on a later run
FAILED = "failed"  # permanent for this message
STOP = "stop"  # authentication: stop the stage, release the batch


# Named tuples, not frozen dataclasses: one of each per delivery, and a frozen dataclass's
# __init__ (object.__setattr__ per field) cost several times a tuple's.
class PushMessage(NamedTuple):
    delivery_id: int
    token: str
    title: str
    body: str
    data: dict


class PushOutcome(NamedTuple):
    delivery_id: int
    action: str
    message_id: str | None = None
    error_code: str | None = None
    error: str | None = None


def message_id_prefix(outcomes: Sequence[PushOutcome]) -> str | None:
    """The text every outcome's message id is, followed by its delivery id (the outbox's ids
    within one call), else None: then the ids can be written by an UPDATE that computes them
    from the delivery's id, where ids that differ must travel row by row."""
    if not outcomes:
        return None
    first = outcomes[0]
    suffix = str(first.delivery_id)
    if not (first.message_id or "").endswith(suffix):
        return None
    prefix = first.message_id[:-len(suffix)]
    if all(o.message_id == f"{prefix}{o.delivery_id}" for o in outcomes):
        return prefix
    return None


def classify(exception: Exception) -> tuple[str, str]:
    """(action, error code) for a firebase-admin send error."""
    from firebase_admin import exceptions, messaging
    from google.auth import exceptions as auth_exceptions

    if isinstance(exception, auth_exceptions.RefreshError) or isinstance(
            getattr(exception, "cause", None), auth_exceptions.RefreshError):
        # The service account could not get an access token (revoked key, wrong token_uri):
        # send_each wraps that in UnknownError for the whole batch. Retrying cannot help.
        return STOP, "CREDENTIAL_REFRESH_FAILED"
    if isinstance(exception, messaging.UnregisteredError):
        return DEACTIVATE, "UNREGISTERED"
    if isinstance(exception, messaging.SenderIdMismatchError):
        return DEACTIVATE, "SENDER_ID_MISMATCH"
    if isinstance(exception, exceptions.InvalidArgumentError):
        text = str(exception).lower()
        if "registration token" in text or "not a valid fcm" in text:
            return DEACTIVATE, "INVALID_TOKEN"
        return FAILED, "INVALID_ARGUMENT"
    if isinstance(exception, messaging.ThirdPartyAuthError):
        return STOP, "THIRD_PARTY_AUTH_ERROR"
    if isinstance(exception, (exceptions.UnauthenticatedError, exceptions.PermissionDeniedError)):
        return STOP, type(exception).__name__.replace("Error", "").upper()
    if isinstance(exception, messaging.QuotaExceededError):
        return RETRY, "QUOTA_EXCEEDED"
    if isinstance(exception, exceptions.FirebaseError):
        code = getattr(exception, "code", None) or type(exception).__name__
        return RETRY, str(code).upper()
    return RETRY, type(exception).__name__


MAX_CALL_SIZE = 500  # FCM's limit for one send_each call


def call_limits(lease_seconds: float):
    """(request timeout, urllib3 Retry) that end one send_each call within half the lease.

    firebase-admin's defaults (120 s a request, one retry after a connect or read error, four
    after a 500/503, Retry-After honoured up to 6 h) can outlast the 600 s lease, and then another
    run recovers the rows and sends them again. Here each message gets at most 3 tries (one more
    after a refused connection, two more after a 500/503; none after a read timeout, which FCM may
    have delivered: that message retries on a later run), each try waits at most T to connect and
    T to read, and the wait between tries (backoff or Retry-After) is at most T. The worst case,
    3 x 2T + 2T = 8T, is half the lease: T = lease / 16 (37.5 s at the default 600 s), at most the
    SDK's own 120 s. The worker renews the lease before a call once a quarter of it is spent.
    """
    from urllib3.util.retry import Retry

    timeout = max(1.0, min(120.0, lease_seconds / 16))
    retry = Retry(total=2, connect=1, read=0, status=2, other=0, status_forcelist=[500, 503],
                  allowed_methods=None, raise_on_status=False, backoff_factor=0.5,
                  backoff_max=timeout, retry_after_max=max(1, int(timeout)))
    return timeout, retry


# One encoder for every outbox line, the one json.dumps(..., sort_keys=True) would build anew
# for each call (a quarter of a line's encoding time).
_LINE_ENCODER = json.JSONEncoder(sort_keys=True)


class OutboxPusher:
    """No Firebase configured: every message becomes a JSON line in the outbox (the embedded default)."""

    uses_outbox = True

    def __init__(self, settings: Settings):
        self.folder = Path(settings.outbox_dir) / "push"
        # No provider's limit to keep: the stage's whole claimed batch is one append and one
        # write-back, where calls of 500 took four of each (and ownership checks between them).
        self.batch_size = sys.maxsize

    def describe(self) -> str:
        return f"outbox {self.folder}"

    def send(self, messages: Sequence[PushMessage]) -> list[PushOutcome]:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{utcnow():%Y%m%d}.jsonl"
        outcomes, lines = [], []
        written_at = utcnow().isoformat() + "Z"
        # One uuid a call, each message named by it and its delivery id (unique in a call): a
        # uuid4 per message cost as much as writing its line, and ids of this form are written
        # back by one UPDATE that computes them (message_id_prefix).
        call_prefix = f"outbox/{uuid.uuid4().hex}/"
        encode = _LINE_ENCODER.encode
        for delivery_id, token, title, body, data in messages:
            message_id = f"{call_prefix}{delivery_id}"
            lines.append(encode({
                "message_id": message_id, "delivery_id": delivery_id, "token": token,
                "title": title, "body": body, "data": data, "written_at": written_at,
            }))
            outcomes.append(PushOutcome(delivery_id, SENT, message_id))
        with path.open("a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        return outcomes


class FcmPusher:
    """firebase-admin's send_each, at most 500 messages a call."""

    uses_outbox = False

    def __init__(self, settings: Settings):
        import firebase_admin
        from firebase_admin import credentials, messaging

        source = settings.firebase_credentials
        timeout, retry = call_limits(settings.worker_lease_seconds)
        options: dict = {"httpTimeout": timeout}
        if settings.firebase_project_id:
            options["projectId"] = settings.firebase_project_id
        if settings.fcm_endpoint:
            # An FCM emulator or a proxy; the SDK reads this class attribute per app service.
            messaging._MessagingService.FCM_URL = settings.fcm_endpoint
        if source == "anonymous":
            credential = _anonymous_credential()
            if "projectId" not in options:
                raise ConfigError("firebase_credentials=anonymous needs firebase_project_id")
        else:
            try:
                credential = credentials.Certificate(source)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"firebase_credentials {source}: {exc}") from exc
        self._app = firebase_admin.initialize_app(credential, options, name=f"ops-{uuid.uuid4().hex}")
        self._messaging = messaging
        self.batch_size = min(MAX_CALL_SIZE, settings.push_batch_size)
        self._bound_retries(retry)

    def _bound_retries(self, retry) -> None:
        """Replace the SDK's retry policy (see call_limits) on every adapter its FCM session has,
        the one it mounts for fcm.googleapis.com included (the longest prefix wins)."""
        import requests.adapters

        session = self._messaging._get_messaging_service(self._app)._client.session
        for prefix in [*session.adapters, "http://", "https://"]:
            session.mount(prefix, requests.adapters.HTTPAdapter(
                pool_connections=100, pool_maxsize=100, max_retries=retry))

    def describe(self) -> str:
        return f"Firebase project {self._app.project_id}"

    def send(self, messages: Sequence[PushMessage]) -> list[PushOutcome]:
        outcomes: list[PushOutcome] = []
        for start in range(0, len(messages), self.batch_size):
            outcomes.extend(self._send_batch(messages[start:start + self.batch_size]))
        return outcomes

    def _send_batch(self, batch: Sequence[PushMessage]) -> list[PushOutcome]:
        m = self._messaging
        # The SDK checks every message before sending any: one it rejects (an empty token, a
        # title that is not text) would fail the whole call, so each is checked on its own
        # and only the good ones are sent.
        outcomes: dict[int, PushOutcome] = {}
        payloads, sendable = [], []
        for msg in batch:
            payload = m.Message(
                token=msg.token,
                notification=m.Notification(title=msg.title, body=msg.body),
                data={str(k): _data_value(v) for k, v in (msg.data or {}).items()},
            )
            try:
                m._MessagingService.encode_message(payload)
            except ValueError as exc:
                outcomes[msg.delivery_id] = _rejected(msg, exc)
                continue
            payloads.append(payload)
            sendable.append(msg)
        if payloads:
            outcomes.update(self._send_each(sendable, payloads))
        return [outcomes[msg.delivery_id] for msg in batch]

    def _send_each(self, batch: Sequence[PushMessage], payloads) -> dict[int, PushOutcome]:
        m = self._messaging
        try:
            response = m.send_each(payloads, app=self._app)
        except Exception as exc:  # the whole call failed (transport, credential refresh)
            action, code = classify(exc)
            return {msg.delivery_id: PushOutcome(msg.delivery_id, action, error_code=code,
                                                 error=str(exc)[:500]) for msg in batch}
        outcomes = {}
        for msg, item in zip(batch, response.responses):
            if item.success:
                outcomes[msg.delivery_id] = PushOutcome(msg.delivery_id, SENT,
                                                        message_id=item.message_id)
            else:
                action, code = classify(item.exception)
                outcomes[msg.delivery_id] = PushOutcome(msg.delivery_id, action, error_code=code,
                                                        error=str(item.exception)[:500])
        return outcomes

    def close(self) -> None:
        import firebase_admin

        firebase_admin.delete_app(self._app)


def _data_value(value) -> str:
    """FCM data values are strings: text as it is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _rejected(message: PushMessage, exc: ValueError) -> PushOutcome:
    """A message the SDK refuses to send: a missing token is a dead device, anything else
    is wrong with this message for good."""
    if not (message.token or "").strip():
        return PushOutcome(message.delivery_id, DEACTIVATE, error_code="INVALID_TOKEN",
                           error=f"the device has no token: {exc}"[:500])
    return PushOutcome(message.delivery_id, FAILED, error_code="INVALID_MESSAGE",
                       error=str(exc)[:500])


def _anonymous_credential():
    """Credentials for an FCM emulator or test server: no Google login, nothing to refresh."""
    import google.auth.credentials
    from firebase_admin import credentials

    class NoLogin(google.auth.credentials.AnonymousCredentials):
        def refresh(self, request):
            return None

    class Anonymous(credentials.Base):
        def get_credential(self):
            return NoLogin()

    return Anonymous()


def check_settings(settings: Settings) -> list[str]:
    """Problems with the push settings, found before the tool connects to anything."""
    source = settings.firebase_credentials
    if not source:
        return []
    if source == "anonymous":
        return [] if settings.firebase_project_id else [
            "firebase_credentials=anonymous needs firebase_project_id"]
    if not Path(source).is_file():
        return [f"firebase_credentials: no such file {source}"]
    return []


def make_pusher(settings: Settings):
    """The FCM pusher when Firebase is configured, else the outbox.

    Any failure to set it up is a ConfigError: the stage then gives its claimed rows back with
    their attempts, instead of spending one attempt of every row on each run until all of them
    are dead-lettered unsent.
    """
    if not settings.firebase_credentials:
        return OutboxPusher(settings)
    try:
        return FcmPusher(settings)
    except ConfigError:
        raise
    except Exception as exc:  # the SDK's or its HTTP stack's own, whatever their type
        raise ConfigError(f"push: cannot set up Firebase: {type(exc).__name__}: {exc}") from exc
