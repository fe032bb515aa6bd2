"""Tests for tests/fakes: the real firebase-admin SDK against FakeFcmServer, and FakeSmtpServer."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import firebase_admin
import pytest
from firebase_admin import exceptions, messaging

from tests.fakes.fcm_server import (
    KINDS, FakeCredential, FakeFcmServer, firebase_app_context, firebase_app_for,
    patch_fcm_url)
from tests.fakes.smtp_server import FakeSmtpServer

# firebase-admin 7.x warns that Message.token is deprecated in favour of Message.fid;
# the project (firebase-admin>=6.5) still uses token=.
pytestmark = pytest.mark.filterwarnings("ignore:Message.token is deprecated:DeprecationWarning")

MESSAGE_ID_PREFIX = "projects/test-project/messages/"


@pytest.fixture
def server():
    with FakeFcmServer() as srv:
        yield srv


@pytest.fixture
def app(server):
    """App bound to the fake; the SDK's retry policy without its sleeps."""
    with firebase_app_context(server, fast_retries=True) as fb_app:
        yield fb_app


def _msg(token: str, **data: str) -> messaging.Message:
    return messaging.Message(
        token=token,
        notification=messaging.Notification(title="Absence", body="Ann was absent today"),
        data={"student_id": "42", **data},
    )


# (kind, exact exception class, FirebaseError.code, HTTP status, requests the SDK makes)
ERROR_CASES = [
    ("unregistered", messaging.UnregisteredError, exceptions.NOT_FOUND, 404, 1),
    ("sender_id_mismatch", messaging.SenderIdMismatchError, exceptions.PERMISSION_DENIED, 403, 1),
    ("invalid_token", exceptions.InvalidArgumentError, exceptions.INVALID_ARGUMENT, 400, 1),
    ("invalid_argument_other", exceptions.InvalidArgumentError, exceptions.INVALID_ARGUMENT,
     400, 1),
    ("quota", messaging.QuotaExceededError, exceptions.RESOURCE_EXHAUSTED, 429, 1),
    # 500/503: urllib3 Retry(status=4) -> 1 + 4 attempts.
    ("unavailable", exceptions.UnavailableError, exceptions.UNAVAILABLE, 503, 5),
    ("internal", exceptions.InternalError, exceptions.INTERNAL, 500, 5),
    # 401: google-auth AuthorizedSession refreshes and resends twice.
    ("auth", exceptions.UnauthenticatedError, exceptions.UNAUTHENTICATED, 401, 3),
    ("third_party_auth", messaging.ThirdPartyAuthError, exceptions.UNAUTHENTICATED, 401, 3),
]


def test_error_cases_cover_all_kinds():
    assert {c[0] for c in ERROR_CASES} | {"ok"} == set(KINDS)


def test_ok_returns_message_id_and_records_request(server, app):
    batch = messaging.send_each([_msg("tok-1", kind="absence")], app=app)

    assert (batch.success_count, batch.failure_count) == (1, 0)
    [resp] = batch.responses
    assert resp.success is True and resp.exception is None
    assert resp.message_id.startswith(MESSAGE_ID_PREFIX)

    [req] = server.requests
    assert req.project_id == "test-project"
    assert req.token == "tok-1"
    assert req.kind == "ok" and req.status == 200
    assert req.response == {"name": resp.message_id}
    assert req.message == {
        "token": "tok-1",
        "notification": {"title": "Absence", "body": "Ann was absent today"},
        "data": {"student_id": "42", "kind": "absence"},
    }
    assert req.body == {"message": req.message}
    assert req.validate_only is False
    assert req.headers.get("X-GOOG-API-FORMAT-VERSION") == "2"
    assert "Authorization" not in req.headers


def test_message_ids_are_unique(server, app):
    batch = messaging.send_each([_msg(f"t{i}") for i in range(20)], app=app)
    ids = [r.message_id for r in batch.responses]
    assert batch.success_count == 20
    assert len(set(ids)) == 20


@pytest.mark.parametrize("kind,exc_class,code,http_status,attempts", ERROR_CASES,
                         ids=[c[0] for c in ERROR_CASES])
def test_error_kind_maps_to_sdk_exception(server, app, kind, exc_class, code, http_status,
                                          attempts):
    server.respond("bad", kind)
    batch = messaging.send_each([_msg("good"), _msg("bad")], app=app)

    assert (batch.success_count, batch.failure_count) == (1, 1)
    good, bad = batch.responses
    assert good.success and good.message_id.startswith(MESSAGE_ID_PREFIX)
    assert bad.success is False and bad.message_id is None
    exc = bad.exception
    assert type(exc) is exc_class
    assert isinstance(exc, exc_class) and isinstance(exc, exceptions.FirebaseError)
    assert exc.code == code
    assert exc.http_response is not None and exc.http_response.status_code == http_status

    bad_requests = server.requests_for("bad")
    assert len(bad_requests) == attempts
    assert {(r.kind, r.status) for r in bad_requests} == {(kind, http_status)}
    assert str(exc) == bad_requests[0].response["error"]["message"]
    assert len(server.requests_for("good")) == 1


def test_invalid_token_and_other_invalid_argument_differ_only_in_message(server, app):
    server.respond("t-invalid", "invalid_token")
    server.respond("t-payload", "invalid_argument_other")
    r_token, r_payload = messaging.send_each([_msg("t-invalid"), _msg("t-payload")],
                                             app=app).responses
    assert type(r_token.exception) is type(r_payload.exception) is exceptions.InvalidArgumentError
    assert str(r_token.exception) == (
        "The registration token is not a valid FCM registration token")
    assert "registration token" not in str(r_payload.exception)


def test_send_raises_the_same_classes(server, app):
    server.respond("gone", "unregistered")
    server.respond("quota", "quota")
    assert messaging.send(_msg("fine"), app=app).startswith(MESSAGE_ID_PREFIX)
    with pytest.raises(messaging.UnregisteredError):
        messaging.send(_msg("gone"), app=app)
    with pytest.raises(messaging.QuotaExceededError):
        messaging.send(_msg("quota"), app=app)


def test_respond_all_sets_default_and_scripts_override_it(server, app):
    server.respond_all("unregistered")
    server.respond("alive", "ok")
    r_alive, r_other = messaging.send_each([_msg("alive"), _msg("other")], app=app).responses
    assert r_alive.success
    assert isinstance(r_other.exception, messaging.UnregisteredError)

    server.reset()
    assert server.requests == []
    assert messaging.send_each([_msg("other")], app=app).responses[0].success


def test_scripted_sequence_lets_the_sdk_retry_succeed(server):
    # Default (slow) retry config: the first retry after a 503 has zero backoff.
    with firebase_app_context(server) as fb_app:
        server.respond("flaky", ["unavailable", "ok"])
        [resp] = messaging.send_each([_msg("flaky")], app=fb_app).responses
    assert resp.success and resp.message_id.startswith(MESSAGE_ID_PREFIX)
    assert [r.kind for r in server.requests_for("flaky")] == ["unavailable", "ok"]


def test_unavailable_with_real_backoff_and_retry_after(server):
    """The one slow test (~4 s): the SDK's real retry/backoff against 503 + Retry-After: 1.

    Without the header the backoff is 0 + 1 + 2 + 4 = 7 s; Retry-After: 1 replaces each
    sleep with 1 s.  (Retry-After: 0 would not help: urllib3 falls back to the backoff.)
    How long it waited is machine time, not asserted here: the requests the SDK made are.
    """
    server.retry_after = 1
    server.respond("down", "unavailable")
    with firebase_app_context(server) as fb_app:
        [resp] = messaging.send_each([_msg("down")], app=fb_app).responses
    assert isinstance(resp.exception, exceptions.UnavailableError)
    down = server.requests_for("down")
    assert [r.kind for r in down] == ["unavailable"] * 5  # the first try and four retries


def test_a_held_answer_waits_for_the_test_to_release_it(server, app):
    import threading

    held = server.hold("slow")
    responses = []
    sender = threading.Thread(target=lambda: responses.extend(
        messaging.send_each([_msg("slow")], app=app).responses))
    sender.start()
    assert held.arrived.wait(30)
    assert server.requests_for("slow") == [] and not responses  # still waiting for its answer
    held.release()
    sender.join(30)
    assert responses[0].success and len(server.requests_for("slow")) == 1
    # Only the next request is held: a later one is answered at once.
    assert messaging.send_each([_msg("slow")], app=app).responses[0].success


def test_quota_with_retry_after_is_retried_by_urllib3(server, app):
    # Surprise: 429 is not in the SDK's status_forcelist, but urllib3 retries it when
    # the answer carries Retry-After (Retry.RETRY_AFTER_STATUS_CODES).
    server.retry_after = 1
    server.respond("q", "quota")
    [resp] = messaging.send_each([_msg("q")], app=app).responses   # fast_retries: no sleeps
    assert isinstance(resp.exception, messaging.QuotaExceededError)
    assert len(server.requests_for("q")) == 5
    assert server.requests_for("q")[0].status == 429


def test_batch_of_500(server, app):
    dead = {f"tok-{i}" for i in range(0, 500, 50)}          # 10 unregistered
    for token in dead:
        server.respond(token, "unregistered")
    tokens = [f"tok-{i}" for i in range(500)]

    batch = messaging.send_each([_msg(t) for t in tokens], app=app)

    assert (batch.success_count, batch.failure_count) == (490, 10)
    assert len(batch.responses) == 500
    for token, resp in zip(tokens, batch.responses):           # order is preserved
        if token in dead:
            assert isinstance(resp.exception, messaging.UnregisteredError), token
        else:
            assert resp.success and resp.message_id.startswith(MESSAGE_ID_PREFIX), token
    ids = [r.message_id for r in batch.responses if r.success]
    assert len(set(ids)) == 490
    assert sorted(server.tokens) == sorted(tokens)  # one request each: nothing was retried


def test_dry_run_and_fid_and_topic(server, app):
    server.respond("fid-1", "unregistered")
    batch = messaging.send_each(
        [messaging.Message(fid="fid-1"), messaging.Message(topic="news"), _msg("t")],
        dry_run=True, app=app)
    r_fid, r_topic, r_tok = batch.responses
    assert isinstance(r_fid.exception, messaging.UnregisteredError)
    assert r_topic.message_id == "projects/test-project/messages/fake_message_id"
    assert r_tok.success
    by_token = {r.token: r for r in server.requests}
    assert by_token["fid-1"].message == {"fid": "fid-1"}
    assert by_token[None].message == {"topic": "news"}
    assert all(r.validate_only for r in server.requests)


def test_unknown_kind_is_rejected(server):
    with pytest.raises(ValueError):
        server.respond("t", "bogus")
    with pytest.raises(ValueError):
        server.respond_all("nope")


def test_firebase_app_context_restores_fcm_url_and_deletes_app(server):
    original = messaging._MessagingService.FCM_URL
    with firebase_app_context(server) as fb_app:
        assert messaging._MessagingService.FCM_URL == server.url_template
        name = fb_app.name
        assert firebase_admin.get_app(name) is fb_app
        assert fb_app.project_id == "test-project"
    assert messaging._MessagingService.FCM_URL == original
    with pytest.raises(ValueError):
        firebase_admin.get_app(name)


def test_app_stays_bound_after_fcm_url_is_restored(server):
    original = messaging._MessagingService.FCM_URL
    fb_app = firebase_app_for(server)
    try:
        messaging._MessagingService.FCM_URL = original
        assert messaging.send(_msg("x"), app=fb_app).startswith(MESSAGE_ID_PREFIX)
        assert server.tokens == ["x"]
    finally:
        messaging._MessagingService.FCM_URL = original
        firebase_admin.delete_app(fb_app)


def test_patch_fcm_url_for_apps_built_elsewhere(server):
    original = messaging._MessagingService.FCM_URL
    with patch_fcm_url(server):
        fb_app = firebase_admin.initialize_app(
            FakeCredential(), {"projectId": "other-project"}, name="patched-elsewhere")
        try:
            msg_id = messaging.send(_msg("y"), app=fb_app)
        finally:
            firebase_admin.delete_app(fb_app)
    assert messaging._MessagingService.FCM_URL == original
    assert msg_id.startswith("projects/other-project/messages/")
    assert server.requests[0].project_id == "other-project"


def test_plain_anonymous_credentials_break_the_whole_batch_on_401(server):
    # Why FakeCredential has a no-op refresh(): AnonymousCredentials.refresh() raises a
    # google.auth error that escapes send_each's per-message error handling.
    from google.auth.credentials import AnonymousCredentials

    server.respond("needs-auth", "auth")
    fb_app = firebase_admin.initialize_app(
        AnonymousCredentials(), {"projectId": "test-project"}, name="plain-anonymous")
    try:
        with patch_fcm_url(server):
            with pytest.raises(exceptions.UnknownError):
                messaging.send_each([_msg("fine"), _msg("needs-auth")], app=fb_app)
    finally:
        firebase_admin.delete_app(fb_app)


# --------------------------------------------------------------------------- SMTP fake

def test_fake_smtp_server_receives_message_with_attachment():
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 4
    with FakeSmtpServer() as smtp:
        assert smtp.host == "127.0.0.1" and smtp.port > 0
        msg = EmailMessage()
        msg["From"] = "billing@school.example"
        msg["To"] = "parent@example.com"
        msg["Subject"] = "Invoice März"
        msg.set_content("Please find the invoice attached.\n")
        msg.add_attachment(pdf, maintype="application", subtype="pdf",
                           filename="invoice-2024-03.pdf")
        with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
            refused = client.send_message(msg)
        assert refused == {}

        [received] = smtp.messages
        [env] = smtp.envelopes
    assert env.mail_from == "billing@school.example"
    assert env.rcpt_tos == ["parent@example.com"]
    assert received["Subject"] == "Invoice März"
    assert received["To"] == "parent@example.com"
    assert received.get_body(("plain",)).get_content() == "Please find the invoice attached.\n"
    [attachment] = list(received.iter_attachments())
    assert attachment.get_filename() == "invoice-2024-03.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == pdf
