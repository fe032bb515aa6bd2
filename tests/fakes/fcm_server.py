"""A fake FCM HTTP v1 server for driving the real ``firebase-admin`` SDK in tests.

Usage::

    from firebase_admin import messaging
    from tests.fakes.fcm_server import FakeFcmServer, firebase_app_context

    with FakeFcmServer() as server, firebase_app_context(server) as app:
        server.respond("dead-token", "unregistered")
        batch = messaging.send_each(
            [messaging.Message(token="dead-token"), messaging.Message(token="live")],
            app=app)
        assert isinstance(batch.responses[0].exception, messaging.UnregisteredError)
        assert batch.responses[1].message_id.startswith("projects/test-project/messages/")
        assert sorted(server.tokens) == ["dead-token", "live"]   # every attempt is recorded

The server listens on ``127.0.0.1`` (port chosen by the OS) and answers
``POST /v1/projects/<project>/messages:send`` the way FCM does.  Error bodies are
the ``google.rpc.Status`` JSON that FCM really returns, so the SDK maps them to the
same exception classes as in production (checked against firebase-admin 7.7):

=========================  ======  ===================  =====================================
kind                       HTTP    ``error.status``     exception on ``SendResponse``
=========================  ======  ===================  =====================================
``ok``                     200     -                    none; ``message_id`` is the ``name``
``unregistered``           404     NOT_FOUND            ``messaging.UnregisteredError``
``sender_id_mismatch``     403     PERMISSION_DENIED    ``messaging.SenderIdMismatchError``
``invalid_token``          400     INVALID_ARGUMENT     ``exceptions.InvalidArgumentError``
``invalid_argument_other`` 400     INVALID_ARGUMENT     ``exceptions.InvalidArgumentError``
``quota``                  429     RESOURCE_EXHAUSTED   ``messaging.QuotaExceededError``
``unavailable``            503     UNAVAILABLE          ``exceptions.UnavailableError``
``internal``               500     INTERNAL             ``exceptions.InternalError``
``auth``                   401     UNAUTHENTICATED      ``exceptions.UnauthenticatedError``
``third_party_auth``       401     UNAUTHENTICATED      ``messaging.ThirdPartyAuthError``
=========================  ======  ===================  =====================================

How the SDK parses errors (``_utils.handle_platform_error_from_requests`` and
``messaging._MessagingService._build_fcm_error``):

* The FCM-specific classes (Unregistered, SenderIdMismatch, QuotaExceeded,
  ThirdPartyAuth) are chosen *only* from ``error.details[]`` - the first entry whose
  ``@type`` is exactly ``type.googleapis.com/google.firebase.fcm.v1.FcmError`` - by
  its ``errorCode``.  HTTP status and ``error.status`` do not matter for them; a
  404 without that detail is a plain ``exceptions.NotFoundError``.
* Otherwise the class comes from the ``error.status`` *string* (``"INVALID_ARGUMENT"``
  etc.); the HTTP status code is used only if ``status`` is absent, and an
  unrecognised status string gives ``exceptions.UnknownError``.
* ``str(exception)`` is ``error.message``.  An invalid token and any other bad
  request are both ``InvalidArgumentError`` (FCM's errorCode is ``INVALID_ARGUMENT``,
  which the SDK has no subclass for); only the message text (and the
  ``google.rpc.BadRequest`` field violation on ``message.token``) tell them apart.

Retries (the synchronous ``send``/``send_each`` path, a ``requests`` session):

* The SDK's urllib3 ``Retry`` (``_http_client.DEFAULT_RETRY_CONFIG``) retries HTTP
  500 and 503 up to 4 times with ``backoff_factor=0.5``: sleeps 0, 1, 2, 4 s, i.e.
  one 500/503 answer costs 5 recorded requests and ~7 s.  The fake does nothing
  special about this - every attempt is answered by the scripted kind and recorded.
* ``Retry-After`` is honoured by urllib3 (it replaces the backoff sleep), but
  ``Retry-After: 0`` does *not* shorten anything: urllib3 treats a 0 value as
  "no header" and falls back to the exponential backoff.  ``FakeFcmServer(retry_after=1)``
  sends ``Retry-After: 1`` on 429/500/503, giving 4 x 1 s = ~4 s per failing message.
* Caveat: with a ``Retry-After`` header urllib3 also retries **429** (it is in
  ``Retry.RETRY_AFTER_STATUS_CODES``), so real FCM quota answers carrying the header
  are retried 4 times by the SDK before you see ``QuotaExceededError``.
* For fast tests use ``firebase_app_for(server, fast_retries=True)``: same retry
  decisions and counts, but no sleeping.
* A 401 makes google-auth's ``AuthorizedSession`` refresh the credential and resend,
  up to 2 times: one ``auth`` message = 3 recorded requests.  (With plain
  ``google.auth.credentials.AnonymousCredentials`` the refresh raises
  ``InvalidOperation``, which is not a ``requests`` exception, so ``send_each`` raises
  ``exceptions.UnknownError`` for the *whole batch*; ``FakeCredential`` below uses a
  no-op refresh to avoid that.)

A slow FCM, driven by the test rather than by sleeps: ``held = server.hold("tok")`` keeps back
the answer to the next request for that token; ``held.arrived`` is set when it comes in, and
the fake answers it (as scripted) once the test calls ``held.release()``.  Later requests for
the token are answered at once.

``send_each`` runs one thread per message (``ThreadPoolExecutor(max_workers=len(messages))``),
so a batch of 500 means 500 concurrent connections; the server uses a large
listen backlog to take them without SYN retransmit delays.
"""

from __future__ import annotations

import contextlib
import copy
import http.server
import itertools
import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import firebase_admin
import requests.adapters
from firebase_admin import _http_client, credentials, messaging
from google.auth.credentials import AnonymousCredentials
from urllib3.util.retry import Retry

__all__ = [
    "KINDS",
    "FakeFcmServer",
    "Hold",
    "RecordedRequest",
    "FakeCredential",
    "firebase_app_for",
    "firebase_app_context",
    "patch_fcm_url",
    "error_body",
]

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


def _fcm_detail(error_code: str) -> Dict[str, str]:
    return {"@type": FCM_ERROR_TYPE, "errorCode": error_code}


def error_body(
    http_status: int, status: str, message: str, details: Sequence[Dict[str, Any]] = ()
) -> Dict[str, Any]:
    """A ``google.rpc.Status`` error body as returned by FCM HTTP v1."""
    error: Dict[str, Any] = {"code": http_status, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    return {"error": error}


# kind -> (HTTP status, JSON body).  Bodies follow real FCM v1 responses.
_ERRORS: Dict[str, tuple] = {
    "unregistered": (
        404,
        error_body(404, "NOT_FOUND", "Requested entity was not found.",
                   [_fcm_detail("UNREGISTERED")]),
    ),
    "sender_id_mismatch": (
        403,
        error_body(403, "PERMISSION_DENIED", "SenderId mismatch",
                   [_fcm_detail("SENDER_ID_MISMATCH")]),
    ),
    "invalid_token": (
        400,
        error_body(
            400, "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
            [
                _fcm_detail("INVALID_ARGUMENT"),
                {"@type": BAD_REQUEST_TYPE,
                 "fieldViolations": [{"field": "message.token",
                                      "description": "Invalid registration token"}]},
            ],
        ),
    ),
    "invalid_argument_other": (
        400,
        error_body(
            400, "INVALID_ARGUMENT",
            "Invalid JSON payload received. Unknown name \"badField\" at "
            "'message.notification': Cannot find field.",
            [
                {"@type": BAD_REQUEST_TYPE,
                 "fieldViolations": [{
                     "field": "message.notification",
                     "description": "Invalid JSON payload received. Unknown name "
                                    "\"badField\" at 'message.notification': Cannot find field.",
                 }]},
            ],
        ),
    ),
    "quota": (
        429,
        error_body(
            429, "RESOURCE_EXHAUSTED",
            "Quota exceeded for quota metric 'Send requests' and limit 'Send requests per "
            "minute' of service 'fcm.googleapis.com' for consumer 'project_number:0'.",
            [_fcm_detail("QUOTA_EXCEEDED")],
        ),
    ),
    "unavailable": (
        503,
        error_body(503, "UNAVAILABLE", "The service is currently unavailable.",
                   [_fcm_detail("UNAVAILABLE")]),
    ),
    "internal": (
        500,
        error_body(500, "INTERNAL", "Internal error encountered.",
                   [_fcm_detail("INTERNAL")]),
    ),
    "auth": (
        401,
        error_body(
            401, "UNAUTHENTICATED",
            "Request is missing required authentication credential. Expected OAuth 2 access "
            "token, login cookie or other valid authentication credential. See "
            "https://developers.google.com/identity/sign-in/web/devconsole-project.",
        ),
    ),
    "third_party_auth": (
        401,
        error_body(401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service",
                   [_fcm_detail("THIRD_PARTY_AUTH_ERROR")]),
    ),
}

#: All response kinds understood by ``respond``/``respond_all``.
KINDS = ("ok",) + tuple(_ERRORS)

_RETRY_AFTER_STATUSES = (429, 500, 503)

Script = Union[str, Sequence[str]]


class Hold:
    """An answer the fake keeps back until the test releases it (see ``FakeFcmServer.hold``)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.arrived = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def wait_for_release(self) -> None:
        self.arrived.set()
        # Bounded, so that a test failing before its release() cannot hang the server.
        self._released.wait(self.timeout)


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request received by the fake (every retry is a separate record)."""

    project_id: str
    token: Optional[str]          # message.token, or message.fid (None for topic/condition)
    message: Dict[str, Any]       # the "message" object as sent by the SDK
    body: Dict[str, Any]          # the full JSON body (message + validate_only if dry_run)
    headers: Dict[str, str]
    kind: str                     # the kind that was answered
    status: int                   # the HTTP status that was answered
    response: Dict[str, Any] = field(default_factory=dict)

    @property
    def validate_only(self) -> bool:
        return bool(self.body.get("validate_only"))


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, as the SDK's connection pool expects
    server: "_HttpServer"
    timeout = 60                    # idle keep-alive connections die eventually

    def log_message(self, format, *args):  # noqa: A002 - silence stderr logging
        pass

    def _send_json(self, status: int, payload: Any, headers: Iterable[tuple] = ()) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a held answer past its timeout)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        prefix, suffix = "/v1/projects/", "/messages:send"
        if not (path.startswith(prefix) and path.endswith(suffix)):
            self._send_json(404, error_body(404, "NOT_FOUND", f"Unknown path {path}"))
            return
        project_id = path[len(prefix):-len(suffix)]
        try:
            body = json.loads(raw.decode() or "null")
            if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
                raise ValueError("no message object")
        except ValueError as exc:
            self._send_json(400, error_body(400, "INVALID_ARGUMENT",
                                            f"Invalid JSON payload received. {exc}"))
            return
        self.server.fake.handle(self, project_id, body)

    def do_GET(self) -> None:  # noqa: N802
        self._send_json(405, error_body(405, "METHOD_NOT_ALLOWED", "Use POST"))


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024   # send_each opens one connection per message at once

    def __init__(self, fake: "FakeFcmServer"):
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)


class FakeFcmServer:
    """Threaded fake of ``POST /v1/projects/{project}/messages:send`` on 127.0.0.1.

    ``retry_after``: if not None, 429/500/503 answers carry ``Retry-After: <value>``
    (see the module docstring: 0 does not shorten the SDK's backoff, 1 caps it at 1 s).
    """

    def __init__(self, *, retry_after: Optional[int] = None) -> None:
        self.retry_after = retry_after
        self._lock = threading.Lock()
        self._default: str = "ok"
        self._scripts: Dict[str, List[str]] = {}
        self._holds: Dict[str, Hold] = {}
        self._requests: List[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._httpd: Optional[_HttpServer] = None
        self._thread: Optional[threading.Thread] = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> "FakeFcmServer":
        if self._httpd is not None:
            return self
        self._httpd = _HttpServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"FakeFcmServer:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        with self._lock:
            for held in self._holds.values():
                held.release()
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> "FakeFcmServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ----------------------------------------------------------------- addresses
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FakeFcmServer is not started")
        return self._httpd.server_address[1]

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def url_template(self) -> str:
        """Value for ``messaging._MessagingService.FCM_URL`` ({0} = project id)."""
        return f"http://127.0.0.1:{self.port}/v1/projects/{{0}}/messages:send"

    # ----------------------------------------------------------------- scripting
    @staticmethod
    def _check(kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
        return kind

    def respond(self, token: str, kind: Script) -> None:
        """Script the answer for ``token`` (matched against ``message.token`` or
        ``message.fid``).

        ``kind`` is one of ``KINDS``, or a sequence of them answered in turn for
        successive requests with that token (the last one then sticks), e.g.
        ``["unavailable", "ok"]`` to see the SDK's own retry succeed.
        """
        kinds = [kind] if isinstance(kind, str) else list(kind)
        if not kinds:
            raise ValueError("empty script")
        for k in kinds:
            self._check(k)
        with self._lock:
            self._scripts[token] = kinds

    def respond_all(self, kind: str) -> None:
        """Set the answer for tokens without a script (initially ``'ok'``)."""
        self._check(kind)
        with self._lock:
            self._default = kind

    def hold(self, token: str, timeout: float = 60) -> Hold:
        """Keep back the answer to the next request for ``token`` until ``release()``."""
        held = Hold(timeout)
        with self._lock:
            self._holds[token] = held
        return held

    def reset(self) -> None:
        """Forget scripts and recorded requests; the default goes back to 'ok'."""
        with self._lock:
            self._scripts.clear()
            self._requests.clear()
            self._default = "ok"

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # ----------------------------------------------------------------- inspection
    @property
    def requests(self) -> List[RecordedRequest]:
        """A snapshot (copy) of all requests received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, token: str) -> List[RecordedRequest]:
        return [r for r in self.requests if r.token == token]

    @property
    def tokens(self) -> List[Optional[str]]:
        """Token of every received request, in arrival order (retries repeat)."""
        return [r.token for r in self.requests]

    # ----------------------------------------------------------------- serving
    def _next_kind(self, token: Optional[str]) -> str:
        with self._lock:
            script = self._scripts.get(token) if token is not None else None
            if not script:
                return self._default
            return script.pop(0) if len(script) > 1 else script[0]

    def handle(self, handler: _Handler, project_id: str, body: Dict[str, Any]) -> None:
        message = body["message"]
        # firebase-admin 7.x deprecates Message.token in favour of Message.fid; both
        # address one app instance, so scripts are keyed on whichever is present.
        token = message.get("token") or message.get("fid")
        with self._lock:
            held = self._holds.pop(token, None) if token is not None else None
        if held is not None:
            held.wait_for_release()
        kind = self._next_kind(token)
        headers: List[tuple] = []
        if kind == "ok":
            status = 200
            if body.get("validate_only"):
                # What FCM answers for dry_run=True.
                payload = {"name": f"projects/{project_id}/messages/fake_message_id"}
            else:
                n = next(self._ids)
                payload = {"name": f"projects/{project_id}/messages/"
                                   f"0:{n:016d}%{uuid.uuid4().hex[:16]}"}
        else:
            status, payload = _ERRORS[kind]
            if self.retry_after is not None and status in _RETRY_AFTER_STATUSES:
                headers.append(("Retry-After", str(self.retry_after)))
        record = RecordedRequest(
            project_id=project_id, token=token, message=message, body=body,
            headers={k: v for k, v in handler.headers.items()},
            kind=kind, status=status, response=payload)
        with self._lock:
            self._requests.append(record)
        handler._send_json(status, payload, headers)


# --------------------------------------------------------------------------- SDK wiring

class _RefreshableAnonymous(AnonymousCredentials):
    """Anonymous credentials whose refresh() is a no-op.

    google-auth's AuthorizedSession calls refresh() on every 401; the stock
    AnonymousCredentials raise InvalidOperation there, which escapes the SDK's
    error handling and fails a whole send_each batch with UnknownError.
    """

    def refresh(self, request):
        return None


class FakeCredential(credentials.Base):
    """firebase_admin credential that sends no Authorization header and never talks
    to Google (no login, no metadata server, no token endpoint)."""

    def __init__(self) -> None:
        super().__init__()
        self._g_credential = _RefreshableAnonymous()

    def get_credential(self):
        return self._g_credential


class _NoSleepRetry(Retry):
    def sleep(self, response=None):
        return None


def _fast_retry_adapter() -> requests.adapters.HTTPAdapter:
    """An HTTPAdapter with the SDK's retry policy (copied) but without the sleeps."""
    retry = copy.copy(_http_client.DEFAULT_RETRY_CONFIG)
    retry.__class__ = _NoSleepRetry      # Retry.new() keeps type(self), so it sticks
    return requests.adapters.HTTPAdapter(max_retries=retry)


@contextlib.contextmanager
def patch_fcm_url(server: FakeFcmServer) -> Iterator[str]:
    """Point ``_MessagingService.FCM_URL`` at ``server`` for the block, then restore.

    Only messaging services created inside the block (lazily, on an app's first
    messaging call) pick the URL up; use it around code that builds its own App.
    """
    previous = messaging._MessagingService.FCM_URL
    messaging._MessagingService.FCM_URL = server.url_template
    try:
        yield server.url_template
    finally:
        messaging._MessagingService.FCM_URL = previous


def firebase_app_for(
    server: FakeFcmServer,
    *,
    project_id: str = "test-project",
    name: Optional[str] = None,
    fast_retries: bool = False,
    options: Optional[Dict[str, Any]] = None,
):
    """Initialise a uniquely named firebase_admin App that talks to ``server``.

    Sets ``messaging._MessagingService.FCM_URL`` to ``server.url_template`` (and leaves
    it set; ``firebase_app_context`` restores it) and eagerly creates the app's
    messaging service, so the app stays bound to ``server`` even if FCM_URL changes
    later.  ``fast_retries=True`` keeps the SDK's retry policy (counts, statuses,
    Retry-After handling) but skips its sleeps.  Delete the app with
    ``firebase_admin.delete_app(app)`` when done.
    """
    opts = {"projectId": project_id}
    opts.update(options or {})
    app = firebase_admin.initialize_app(
        credential=FakeCredential(), options=opts,
        name=name or f"fake-fcm-{uuid.uuid4().hex}")
    try:
        messaging._MessagingService.FCM_URL = server.url_template
        service = messaging._get_messaging_service(app)
        if fast_retries:
            service._client.session.mount(server.base_url, _fast_retry_adapter())
    except BaseException:
        firebase_admin.delete_app(app)
        raise
    return app


@contextlib.contextmanager
def firebase_app_context(server: FakeFcmServer, **kwargs):
    """``with firebase_app_context(server) as app:`` - ``firebase_app_for`` plus cleanup:
    restores the previous FCM_URL and deletes the app on exit."""
    previous = messaging._MessagingService.FCM_URL
    app = None
    try:
        app = firebase_app_for(server, **kwargs)
        yield app
    finally:
        messaging._MessagingService.FCM_URL = previous
        if app is not None:
            firebase_admin.delete_app(app)
