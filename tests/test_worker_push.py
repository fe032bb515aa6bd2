"""Push delivery stage of run_background_workers: the real worker process and the real
firebase-admin SDK against a fake FCM server on 127.0.0.1, on SQLite and MariaDB.

Rules under test: docs/workers-push-email.md.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading

import pytest
from sqlalchemy import select, update

from conftest import run_cli, snapshot, start_cli, tool_env
from ops_lib.db import connect
from ops_lib.jobs.workers.base import StageStats
from ops_lib.jobs.workers.push import PushStage
from ops_lib.push import RETRY, SENT, FcmPusher, PushMessage, PushOutcome, message_id_prefix
from ops_lib.queue import claim
from ops_lib.runtime import Budget, RunContext, StopSignal
from ops_lib.schema import notification_devices, notifications, push_deliveries, report_email_queue
from ops_lib.settings import load_settings
from ops_lib.timeutil import utcnow
from worker_rows import (
    add_backlog, add_delivery, add_guardian, add_institution, add_report_request, engine_for,
    make_due, result_json, row, rows, stage_row,
)

from tests.fakes.fcm_server import FakeFcmServer

PROJECT = "test-project"


@pytest.fixture
def fcm():
    # Retry-After: 1 keeps the SDK's own 503 retries (4 of them) to ~4 s instead of ~7 s.
    with FakeFcmServer(retry_after=1) as server:
        yield server


@pytest.fixture
def engine(db_url):
    eng = engine_for(db_url)
    yield eng
    eng.dispose()


def run_worker(db_url, tmp_path, fcm, *args, **env):
    """`run_background_workers.py [args] --execute --json` as cron runs it, pointed at the fake."""
    extra = {"OPS_FIREBASE_CREDENTIALS": "anonymous", "OPS_FIREBASE_PROJECT_ID": PROJECT}
    if fcm is not None:
        extra["OPS_FCM_ENDPOINT"] = fcm.url_template
    else:
        extra = {}
    extra.update(env)
    return run_cli("run_background_workers", *args, "--execute", "--json",
                   env=tool_env(db_url, tmp_path, **extra))


def test_push_is_sent_with_its_payload_and_records_the_provider_message_id(
        db_url, engine, tmp_path, fcm):
    guardian, [device] = add_guardian(engine, ["tok-ann"])
    delivery = add_delivery(engine, guardian, device, title="Ann arrived",
                            body="Ann arrived at 08:01",
                            data={"student_id": 7, "kind": "arrival", "late": False})

    done = run_worker(db_url, tmp_path, fcm)

    assert done.returncode == 0, done.stderr
    [request] = fcm.requests
    assert request.project_id == PROJECT
    assert request.message == {
        "token": "tok-ann",
        "notification": {"title": "Ann arrived", "body": "Ann arrived at 08:01"},
        "data": {"student_id": "7", "kind": "arrival", "late": "false"},  # FCM data is text
    }
    sent = row(engine, push_deliveries, delivery)
    assert sent.status == "sent"
    assert sent.provider_message_id == request.response["name"]
    assert sent.provider_message_id.startswith(f"projects/{PROJECT}/messages/")
    assert sent.sent_at is not None and abs(sent.sent_at - utcnow()) < dt.timedelta(minutes=1)
    assert (sent.attempts, sent.error_code, sent.error, sent.claimed_by) == (1, None, None, None)
    assert stage_row(result_json(done), "push")["done"] == 1


def test_dead_tokens_deactivate_the_device_and_other_bad_requests_only_fail_the_delivery(
        db_url, engine, tmp_path, fcm):
    kinds = {"tok-gone": "unregistered", "tok-other-app": "sender_id_mismatch",
             "tok-garbled": "invalid_token", "tok-bad-payload": "invalid_argument_other",
             "tok-fine": "ok"}
    # A device row with an empty token: the SDK refuses to send it at all (before any request).
    guardian, devices = add_guardian(engine, [*kinds, ""])
    deliveries = {token: add_delivery(engine, guardian, device, title=token or "empty")
                  for token, device in zip([*kinds, ""], devices)}
    for token, kind in kinds.items():
        fcm.respond(token, kind)

    done = run_worker(db_url, tmp_path, fcm)

    assert done.returncode == 0, done.stderr
    assert sorted(fcm.tokens) == sorted(kinds)  # one request each: none of these is retried
    # The bad messages did not hold back the good one in the same send_each call.
    assert row(engine, push_deliveries, deliveries["tok-fine"]).status == "sent"
    by_token = {d.token: d for d in rows(engine, notification_devices)}
    expected = {"tok-gone": "UNREGISTERED", "tok-other-app": "SENDER_ID_MISMATCH",
                "tok-garbled": "INVALID_TOKEN", "tok-bad-payload": "INVALID_ARGUMENT",
                "": "INVALID_TOKEN"}
    for token, code in expected.items():
        delivery = row(engine, push_deliveries, deliveries[token])
        assert (delivery.status, delivery.error_code) == ("failed", code), token
        assert delivery.error and delivery.claimed_by is None and delivery.sent_at is None
        device = by_token[token]
        if token == "tok-bad-payload":
            assert (device.is_active, device.deactivated_at, device.deactivation_reason) == \
                (True, None, None)
        else:
            assert device.is_active is False or device.is_active == 0
            assert device.deactivated_at is not None
            assert device.deactivation_reason == f"fcm: {code}"
    assert "not a valid FCM registration token" in \
        row(engine, push_deliveries, deliveries["tok-garbled"]).error
    assert "the device has no token" in row(engine, push_deliveries, deliveries[""]).error
    push = stage_row(result_json(done), "push")
    assert (push["failed"], push["done"]) == (5, 1)
    assert push["details"] == {"devices_deactivated": 4}


@pytest.mark.parametrize("kind, code", [("unavailable", "UNAVAILABLE"),
                                        ("quota", "QUOTA_EXCEEDED")])
def test_unavailable_or_quota_backs_off_and_is_sent_on_a_later_run(
        db_url, engine, tmp_path, fcm, kind, code):
    guardian, [device] = add_guardian(engine, ["tok-busy"])
    delivery = add_delivery(engine, guardian, device)
    # Within one call the SDK retries a 503 twice (3 requests: call_limits bounds it), and a
    # 429 too when it carries a Retry-After header; this 429 carries none: given up at once.
    fcm.retry_after = 1 if kind == "unavailable" else None
    tries = 3 if kind == "unavailable" else 1
    fcm.respond("tok-busy", [kind] * tries + ["ok"])

    before = utcnow()
    first = run_worker(db_url, tmp_path, fcm)

    assert first.returncode == 0, first.stderr
    assert [r.kind for r in fcm.requests] == [kind] * tries
    waiting = row(engine, push_deliveries, delivery)
    assert (waiting.status, waiting.attempts, waiting.error_code) == ("pending", 1, code)
    assert waiting.claimed_by is None and waiting.sent_at is None and waiting.error
    # Backoff for the first attempt: worker_backoff_seconds (30) with jitter between half and all.
    assert before + dt.timedelta(seconds=14) <= waiting.available_at <= \
        utcnow() + dt.timedelta(seconds=31)
    assert stage_row(result_json(first), "push")["retried"] == 1

    if kind == "quota":  # (the 503 case is slow enough: its answers take the SDK ~2 s)
        too_soon = run_worker(db_url, tmp_path, fcm)
        assert stage_row(result_json(too_soon), "push")["claimed"] == 0
        assert row(engine, push_deliveries, delivery).status == "pending"

    make_due(engine, push_deliveries)
    fcm.clear_requests()
    later = run_worker(db_url, tmp_path, fcm)

    assert later.returncode == 0, later.stderr
    sent = row(engine, push_deliveries, delivery)
    assert (sent.status, sent.attempts) == ("sent", 2)
    assert sent.provider_message_id == fcm.requests[-1].response["name"]
    assert [r.kind for r in fcm.requests] == ["ok"]


def test_delivery_out_of_attempts_is_dead_lettered_with_the_last_error(
        db_url, engine, tmp_path, fcm):
    guardian, [device] = add_guardian(engine, ["tok-throttled"])
    delivery = add_delivery(engine, guardian, device)
    fcm.retry_after = None  # with the header the SDK would retry the 429 itself, slowly
    fcm.respond("tok-throttled", "quota")

    done = run_worker(db_url, tmp_path, fcm, OPS_WORKER_MAX_ATTEMPTS="1")

    assert done.returncode == 0, done.stderr
    dead = row(engine, push_deliveries, delivery)
    assert (dead.status, dead.attempts, dead.error_code) == ("failed", 1, "QUOTA_EXCEEDED")
    assert "Quota exceeded" in dead.error
    assert dead.claimed_by is None and dead.sent_at is None
    assert row(engine, notification_devices, device).is_active  # a busy server is not a dead token
    assert stage_row(result_json(done), "push")["failed"] == 1


@pytest.mark.parametrize("kind, code", [("auth", "UNAUTHENTICATED"),
                                        ("third_party_auth", "THIRD_PARTY_AUTH_ERROR")])
def test_auth_error_stops_the_push_stage_gives_the_batch_back_and_other_stages_still_run(
        db_url, engine, tmp_path, fcm, kind, code):
    guardian, devices = add_guardian(engine, ["tok-1", "tok-2"])
    deliveries = [add_delivery(engine, guardian, device, title=f"n{device}") for device in devices]
    institution = add_institution(engine)
    report = add_report_request(engine, institution,
                                params={"from": "2026-01-01", "to": "2026-01-31"})
    fcm.respond_all(kind)

    # As cron runs it: plain lines, no --json.
    done = run_cli("run_background_workers", "--execute", env=tool_env(
        db_url, tmp_path, OPS_FIREBASE_CREDENTIALS="anonymous", OPS_FIREBASE_PROJECT_ID=PROJECT,
        OPS_FCM_ENDPOINT=fcm.url_template))

    assert done.returncode == 1
    [error_line] = [line for line in done.stdout.splitlines() if line.startswith("error:")]
    assert error_line.startswith(f"error: push: Firebase refused our credentials ({code}): ")
    assert f"push stage stopped: Firebase refused our credentials ({code})" in done.stderr
    assert "status=failed" in done.stdout.splitlines()[0]
    for delivery in deliveries:
        back = row(engine, push_deliveries, delivery)
        assert (back.status, back.attempts, back.claimed_by, back.lease_expires_at,
                back.available_at, back.error_code) == ("pending", 0, None, None, None, None)
    assert all(d.is_active for d in rows(engine, notification_devices))
    assert re.search(r"^stages: stage=push claimed=2 done=0 failed=0 retried=0 released=2 ",
                     done.stdout, re.MULTILINE)
    # The stages after push still ran: the report email went to the outbox.
    assert row(engine, report_email_queue, report).status == "sent"
    assert len(list((tmp_path / "outbox" / "email").glob("*.eml"))) == 1


def test_service_account_that_cannot_get_a_token_stops_the_stage_without_spending_attempts(
        db_url, engine, tmp_path, fcm):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    account = tmp_path / "service-account.json"
    account.write_text(json.dumps({
        "type": "service_account", "project_id": PROJECT, "private_key_id": "k1",
        "private_key": pem, "client_email": f"ops@{PROJECT}.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": f"{fcm.base_url}token",  # the fake answers 404 there
    }))
    guardian, [device] = add_guardian(engine, ["tok-1"])
    delivery = add_delivery(engine, guardian, device)

    done = run_worker(db_url, tmp_path, fcm, OPS_FIREBASE_CREDENTIALS=str(account))

    assert done.returncode == 1
    assert "push: Firebase refused our credentials (CREDENTIAL_REFRESH_FAILED)" in \
        result_json(done)["error"]
    back = row(engine, push_deliveries, delivery)
    assert (back.status, back.attempts, back.claimed_by) == ("pending", 0, None)
    assert fcm.requests == []


def test_an_unusable_credentials_file_stops_the_push_stage_and_leaves_the_deliveries_waiting(
        db_url, engine, tmp_path, fcm):
    guardian, [device] = add_guardian(engine, ["tok-1"])
    delivery = add_delivery(engine, guardian, device)
    key = tmp_path / "broken-key.json"
    key.write_text("{not json", encoding="utf-8")

    done = run_worker(db_url, tmp_path, fcm, OPS_FIREBASE_CREDENTIALS=str(key))

    assert done.returncode == 1
    error = result_json(done)["error"]
    assert error.startswith(f"push: firebase_credentials {key}: ")
    back = row(engine, push_deliveries, delivery)
    assert (back.status, back.attempts, back.claimed_by) == ("pending", 0, None)
    assert fcm.requests == []


def test_a_missing_credentials_file_is_bad_usage_before_anything_runs(
        db_url, engine, tmp_path, fcm):
    guardian, [device] = add_guardian(engine, ["tok-1"])
    delivery = add_delivery(engine, guardian, device)

    done = run_worker(db_url, tmp_path, fcm,
                      OPS_FIREBASE_CREDENTIALS=str(tmp_path / "no-such-key.json"))

    assert done.returncode == 2
    assert "firebase_credentials: no such file" in done.stderr
    back = row(engine, push_deliveries, delivery)
    assert (back.status, back.attempts, back.claimed_by) == ("pending", 0, None)


def test_backlog_of_600_goes_out_in_send_each_calls_of_at_most_500(
        db_url, engine, tmp_path, fcm):
    add_backlog(engine, 600)

    done = run_worker(db_url, tmp_path, fcm, "600", OPS_PUSH_BATCH_SIZE="1000")

    assert done.returncode == 0, done.stderr
    assert len(fcm.requests) == 600
    assert len(set(fcm.tokens)) == 600
    with engine.connect() as conn:
        sent = conn.execute(select(push_deliveries.c.id, push_deliveries.c.provider_message_id)
                            .order_by(push_deliveries.c.id)).all()
    assert all(r.provider_message_id for r in sent)
    # The fake numbers its answers in arrival order. send_each answers a whole call before the
    # next starts, so the first call (the 500 lowest ids) got numbers 1..500 and the second
    # 501..600; one call of 600 would have mixed them.
    serial = [int(re.search(r"/0:(\d+)%", r.provider_message_id).group(1)) for r in sent]
    assert sorted(serial[:500]) == list(range(1, 501))
    assert sorted(serial[500:]) == list(range(501, 601))
    push = stage_row(result_json(done), "push")
    assert (push["claimed"], push["done"]) == (600, 600)


def test_push_batch_size_setting_is_capped_at_500(db_url, tmp_path):
    settings = load_settings(env={"OPS_PUSH_BATCH_SIZE": "1000",
                                  "OPS_FIREBASE_CREDENTIALS": "anonymous",
                                  "OPS_FIREBASE_PROJECT_ID": PROJECT})
    database = connect(db_url)
    ctx = RunContext(db=database, settings=settings, run_id="r", tool="t", dry_run=False,
                     budget=Budget(None), stop=StopSignal())
    pusher = FcmPusher(settings)
    try:
        assert PushStage().batch_limit(ctx) == 4 * 500  # claimed four send_each calls at a time
        assert pusher.batch_size == 500  # each call to send_each: at most 500
    finally:
        pusher.close()
        database.engine.dispose()


def test_delivery_to_a_device_deactivated_before_sending_is_cancelled_and_not_sent(
        db_url, engine, tmp_path, fcm):
    guardian, [live] = add_guardian(engine, ["tok-live"])
    _, [dead] = add_guardian(engine, ["tok-dead"], active=False)
    to_live = add_delivery(engine, guardian, live)
    to_dead = add_delivery(engine, guardian, dead, title="to the dead device")

    done = run_worker(db_url, tmp_path, fcm)

    assert done.returncode == 0, done.stderr
    assert fcm.tokens == ["tok-live"]
    cancelled = row(engine, push_deliveries, to_dead)
    assert (cancelled.status, cancelled.error_code, cancelled.sent_at, cancelled.claimed_by) == \
        ("cancelled", "DEVICE_INACTIVE", None, None)
    assert row(engine, push_deliveries, to_live).status == "sent"


def test_guardian_without_a_device_gets_no_delivery(db_url, engine, tmp_path, fcm):
    lonely, _ = add_guardian(engine, [], name="No phone")
    with engine.begin() as conn:
        conn.execute(notifications.insert().values(
            guardian_id=lonely, kind="arrival", title="Arrived", body="b", data={},
            dedupe_key="lonely:1"))

    done = run_worker(db_url, tmp_path, fcm)

    assert done.returncode == 0, done.stderr
    [notification] = rows(engine, notifications)
    assert notification.fanout_status == "done"
    assert rows(engine, push_deliveries) == []
    assert fcm.requests == []


def test_without_firebase_pushes_go_to_the_outbox_as_json_lines_with_a_warning(
        db_url, engine, tmp_path):
    guardian, [device] = add_guardian(engine, ["tok-outbox"])
    delivery = add_delivery(engine, guardian, device, title="Ann arrived", body="at 08:01",
                            data={"student_id": "7"})

    done = run_worker(db_url, tmp_path, None)

    assert done.returncode == 0, done.stderr
    [warning] = [line for line in done.stderr.splitlines() if " WARNING " in line]
    assert "no Firebase credentials configured" in warning
    assert str(tmp_path / "outbox" / "push") in warning
    [outbox_file] = list((tmp_path / "outbox" / "push").glob("*.jsonl"))
    [line] = outbox_file.read_text(encoding="utf-8").splitlines()
    written = json.loads(line)
    assert (written["delivery_id"], written["token"], written["title"], written["body"],
            written["data"]) == (delivery, "tok-outbox", "Ann arrived", "at 08:01",
                                 {"student_id": "7"})
    sent = row(engine, push_deliveries, delivery)
    assert (sent.status, sent.provider_message_id) == ("sent", written["message_id"])


def test_each_outbox_line_and_its_delivery_share_one_message_id_unique_to_the_message(
        db_url, engine, tmp_path):
    # Two guardians of one student get the same data; two runs, so two calls of the outbox.
    same = {"student_id": "7", "status": "late"}
    first, [a, b] = add_guardian(engine, ["tok-a", "tok-b"])
    second, [c] = add_guardian(engine, ["tok-c"])
    deliveries = [add_delivery(engine, first, a, data=same), add_delivery(engine, first, b),
                  add_delivery(engine, second, c, data=same)]

    for limit in ("2", "2"):
        done = run_worker(db_url, tmp_path, None, limit)
        assert done.returncode == 0, done.stderr

    [outbox_file] = list((tmp_path / "outbox" / "push").glob("*.jsonl"))
    written = {line["delivery_id"]: line for line in map(
        json.loads, outbox_file.read_text(encoding="utf-8").splitlines())}
    assert sorted(written) == deliveries
    assert written[deliveries[0]]["data"] == written[deliveries[2]]["data"] == same
    for delivery in deliveries:
        sent = row(engine, push_deliveries, delivery)
        assert (sent.status, sent.provider_message_id) == ("sent", written[delivery]["message_id"])
        assert re.fullmatch(rf"outbox/[0-9a-f]{{32}}/{delivery}", sent.provider_message_id)
    call = {d: written[d]["message_id"].rsplit("/", 1)[0] for d in deliveries}
    # A uuid per call (the first run's two messages), not per run or per message alone.
    assert call[deliveries[0]] == call[deliveries[1]] != call[deliveries[2]]


def test_message_ids_are_written_by_one_computed_update_only_when_each_is_prefix_and_id():
    outbox = [PushOutcome(7, SENT, "outbox/abc/7"), PushOutcome(12, SENT, "outbox/abc/12")]
    assert message_id_prefix(outbox) == "outbox/abc/"
    fcm = [PushOutcome(7, SENT, "projects/p/messages/0:17%7"),
           PushOutcome(8, SENT, "projects/p/messages/0:18%7")]
    assert message_id_prefix(fcm) is None  # the first ends with its id, the second does not
    assert message_id_prefix([*outbox, PushOutcome(13, SENT, "outbox/def/13")]) is None
    assert message_id_prefix([PushOutcome(5, SENT, None)]) is None
    assert message_id_prefix([]) is None


def test_dry_run_over_pending_pushes_changes_nothing_and_sends_nothing(
        db_url, engine, tmp_path, fcm):
    guardian, devices = add_guardian(engine, ["tok-a", "tok-b"])
    for device in devices:
        add_delivery(engine, guardian, device, title=f"n{device}")
    database = connect(db_url)
    before = snapshot(database)

    done = run_cli("run_background_workers", "--json", env=tool_env(
        db_url, tmp_path, OPS_FIREBASE_CREDENTIALS="anonymous", OPS_FIREBASE_PROJECT_ID=PROJECT,
        OPS_FCM_ENDPOINT=fcm.url_template))

    assert done.returncode == 0, done.stderr
    assert snapshot(database) == before
    assert fcm.requests == []
    assert stage_row(result_json(done), "push")["would_take"] == 2
    database.engine.dispose()


def test_a_send_each_call_that_outlasts_the_lease_lets_no_later_call_send_again_and_is_lost_not_done(
        db_url, engine, tmp_path, fcm):
    """Regression: the lease was not renewed between send_each calls and the write-back did not
    check ownership, so a second run re-sent what the first was still sending, and the first
    counted as done rows that were no longer its own."""
    guardian, devices = add_guardian(engine, ["tok-first", "tok-second"])
    first, second = [add_delivery(engine, guardian, d, title=f"n{d}") for d in devices]
    held = fcm.hold("tok-first")  # FCM sits on the first call's answer
    env = tool_env(db_url, tmp_path, OPS_FIREBASE_CREDENTIALS="anonymous",
                   OPS_FIREBASE_PROJECT_ID=PROJECT, OPS_FCM_ENDPOINT=fcm.url_template,
                   OPS_PUSH_BATCH_SIZE="1")  # two send_each calls: tok-first, then tok-second

    slow = start_cli("run_background_workers", "--execute", "--json", env=env)
    try:
        assert held.arrived.wait(60), slow.communicate(timeout=5)
        # The call outlasts the lease (as if FCM took longer than worker_lease_seconds)...
        with engine.begin() as conn:
            assert conn.execute(update(push_deliveries).values(
                lease_expires_at=utcnow() - dt.timedelta(seconds=5))).rowcount == 2
        # ...and the next cron run recovers both rows and sends them.
        takeover = run_worker(db_url, tmp_path, fcm, OPS_PUSH_BATCH_SIZE="1")
    finally:
        held.release()
    out, err = slow.communicate(timeout=60)

    assert slow.returncode == 0, err
    assert takeover.returncode == 0, takeover.stderr
    assert stage_row(result_json(takeover), "push")["done"] == 2
    # The first run's second call found tok-second taken over: it did not send it again.
    assert len(fcm.requests_for("tok-second")) == 1
    # (tok-first went out twice: its one call outlasted the lease, which call_limits prevents
    # outside this test by ending every call within half of it.)
    assert len(fcm.requests_for("tok-first")) == 2
    slow_push = stage_row(json.loads(out), "push")
    assert (slow_push["claimed"], slow_push["done"], slow_push["lost"]) == (2, 0, 2)
    by_token = {r.token: r.response["name"] for r in fcm.requests if r.kind == "ok"}
    assert row(engine, push_deliveries, second).provider_message_id == by_token["tok-second"]
    assert [row(engine, push_deliveries, d).status for d in (first, second)] == ["sent"] * 2


def test_one_send_each_call_ends_within_half_the_lease_and_a_timed_out_send_is_not_retried_in_it(
        tmp_path, fcm):
    from ops_lib.push import call_limits

    lease = 32
    timeout, retry = call_limits(lease)
    # Each try waits at most `timeout` to connect and to read; at most 3 tries, 2 waits between.
    assert timeout == lease / 16
    assert (retry.total, retry.read, retry.backoff_max, retry.retry_after_max) == (
        2, 0, timeout, int(timeout))
    assert 3 * 2 * timeout + 2 * timeout <= lease / 2
    assert call_limits(600)[0] == 37.5 and call_limits(10_000)[0] == 120  # the SDK's own cap

    held = fcm.hold("tok-silent", timeout=30)  # FCM never answers within the timeout
    settings = load_settings(env={"OPS_FIREBASE_CREDENTIALS": "anonymous",
                                  "OPS_FIREBASE_PROJECT_ID": PROJECT,
                                  "OPS_FCM_ENDPOINT": fcm.url_template,
                                  "OPS_WORKER_LEASE_SECONDS": str(lease)})
    pusher = FcmPusher(settings)
    try:
        [outcome] = pusher.send([PushMessage(1, "tok-silent", "t", "b", {})])
        answered = fcm.requests_for("tok-silent")
    finally:
        held.release()
        pusher.close()
    assert (outcome.action, outcome.error_code) == (RETRY, "UNAVAILABLE")  # a later run, backed off
    # The one try timed out while held; no second try reached the fake within the call.
    assert held.arrived.is_set() and answered == []


@pytest.mark.parametrize("lease_spent, renewed", [(0, False), (200, True)])
def test_the_rows_still_to_send_get_a_full_lease_again_once_a_quarter_of_it_is_spent(
        db_url, engine, fcm, lease_spent, renewed):
    """Before each send_each call: with a quarter of the 600 s lease spent (150 s), every row
    still to go gets a full one again; before that, the call's rows are only checked (three
    quarters are left, more than a call can take). Seen on the lease of the second call's row
    while FCM holds that call, with the lease's start given to the stage, not waited for."""
    guardian, devices = add_guardian(engine, ["tok-first", "tok-second"])
    first, second = [add_delivery(engine, guardian, d, title=f"n{d}") for d in devices]
    settings = load_settings(env={"OPS_FIREBASE_CREDENTIALS": "anonymous",
                                  "OPS_FIREBASE_PROJECT_ID": PROJECT,
                                  "OPS_FCM_ENDPOINT": fcm.url_template,
                                  "OPS_PUSH_BATCH_SIZE": "1"})  # one call per delivery
    database = connect(db_url)
    ctx = RunContext(db=database, settings=settings, run_id="r", tool="t", dry_run=False,
                     budget=Budget(None), stop=StopSignal())
    stage = PushStage()
    now = utcnow()
    keys = claim(database, stage.queue, "r", 10, 60, now)  # a lease of 60 s, told apart below
    held = fcm.hold("tok-second")
    stats = StageStats()
    worker = threading.Thread(target=stage.process, args=(
        ctx, keys, stats, now - dt.timedelta(seconds=lease_spent)))
    worker.start()
    try:
        assert held.arrived.wait(60)
        lease_of_second = row(engine, push_deliveries, second).lease_expires_at
    finally:
        held.release()
        worker.join(60)
        stage.close()
        database.engine.dispose()

    assert keys == [first, second]
    if renewed:
        assert lease_of_second >= now + dt.timedelta(seconds=settings.worker_lease_seconds)
    else:
        assert lease_of_second == now + dt.timedelta(seconds=60)
    assert (stats.done, stats.lost) == (2, 0)
    assert [row(engine, push_deliveries, d).status for d in (first, second)] == ["sent"] * 2
