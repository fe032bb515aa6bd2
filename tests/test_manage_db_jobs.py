"""tools/manage_db_jobs.py: list, pause, resume and run one DB job now (dry run by default)."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import func, insert, select

from ops_lib.schema import cron_job_runs, cron_jobs, user_sessions, users
from ops_lib.timeutil import utcnow
from tests.conftest import assert_unchanged, run_cli, snapshot, tool_env

HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)


def add_jobs(db) -> dict[str, int]:
    now = utcnow()
    jobs = {
        "sessions": {"job_type": "purge_expired_sessions", "interval_minutes": 60,
                     "created_at": now - 30 * MINUTE, "last_run_at": now - 30 * MINUTE},
        "due": {"job_type": "noop", "run_at": now - HOUR},
        "paused": {"job_type": "noop", "interval_minutes": 5, "is_active": False},
        "broken": {"job_type": "nope", "run_at": now - HOUR},
    }
    ids = {}
    with db.begin() as conn:
        conn.execute(insert(users).values(id=1, name="Admin", mobile="017", role="admin"))
        conn.execute(insert(user_sessions), [
            {"user_id": 1, "token_hash": "old", "expires_at": now - HOUR},
            {"user_id": 1, "token_hash": "live", "expires_at": now + HOUR}])
        for name, values in jobs.items():
            row = {"name": name, "user_id": None, "run_at": None, "interval_minutes": None,
                   **values}
            ids[name] = conn.execute(insert(cron_jobs).values(**row)).inserted_primary_key[0]
    return ids


def tool(db, tmp_path, *args: str):
    done = run_cli("manage_db_jobs", *args, "--json", env=tool_env(db.url, tmp_path))
    return done, (json.loads(done.stdout) if done.stdout.strip() else None)


def test_list_shows_each_jobs_state_last_slot_and_next_slot(db, tmp_path):
    ids = add_jobs(db)
    done, result = tool(db, tmp_path, "list")
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in result["sections"]["DB jobs"]}
    assert {name: row["state"] for name, row in rows.items()} == {
        "sessions": "scheduled", "due": "due", "paused": "paused", "broken": "invalid"}
    sessions = rows["sessions"]
    assert sessions["id"] == ids["sessions"] and sessions["kind"] == "every 60 min"
    assert sessions["next_slot"] > sessions["last_slot"]  # an hour after it
    assert rows["broken"]["note"] == "unknown job_type 'nope'" and rows["broken"]["next_slot"] is None
    assert result["counts"] == {"jobs": 4, "due": 1, "invalid": 1, "paused": 1}


def dry_run(db, tmp_path, *args: str) -> dict:
    """Run the tool without --execute; prove it changed nothing but its own ledger row."""
    before = snapshot(db)
    done, result = tool(db, tmp_path, *args)
    assert done.returncode == 0, done.stderr
    assert_unchanged(before, snapshot(db))
    return result


def test_pause_and_resume_are_dry_runs_until_execute(db, tmp_path):
    ids = add_jobs(db)
    result = dry_run(db, tmp_path, "pause", "--id", str(ids["due"]))
    assert "--execute would pause 1 jobs" in result["notes"]

    done, result = tool(db, tmp_path, "pause", "--id", str(ids["due"]), "--execute")
    assert done.returncode == 0 and result["counts"]["paused"] == 1
    done, result = tool(db, tmp_path, "resume", "--id", str(ids["paused"]), "--execute")
    assert done.returncode == 0 and result["counts"]["resumed"] == 1
    with db.begin(write=False) as conn:
        active = dict(conn.execute(select(cron_jobs.c.name, cron_jobs.c.is_active)).all())
    assert active == {"sessions": True, "due": False, "paused": True, "broken": True}


def test_run_now_dry_run_changes_nothing_then_execute_runs_the_next_slot_early(db, tmp_path):
    ids = add_jobs(db)
    result = dry_run(db, tmp_path, "run", "--id", str(ids["sessions"]))
    [plan] = result["sections"]["Run now"]
    assert (plan["early"], plan["would_affect"], plan["skipped_slots"]) == (True, 1, 0)

    done, result = tool(db, tmp_path, "run", "--id", str(ids["sessions"]), "--execute")
    assert done.returncode == 0, done.stderr
    assert (result["counts"]["done"], result["counts"]["rows_affected"]) == (1, 1)
    with db.begin(write=False) as conn:
        assert conn.execute(select(user_sessions.c.token_hash)).scalars().all() == ["live"]
        [(slot, status)] = conn.execute(select(cron_job_runs.c.slot_at, cron_job_runs.c.status))
        last = conn.execute(select(cron_jobs.c.last_run_at).where(
            cron_jobs.c.id == ids["sessions"])).scalar_one()
    # The series' next slot ran early: it is recorded as that slot, and the series goes on
    # from it (the worker does not run the same slot again when its time comes).
    assert status == "done" and slot == last == plan_slot(plan)


def plan_slot(plan: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(plan["slot"])


def test_bad_requests_are_one_line_exit_2_and_write_nothing(db, tmp_path):
    ids = add_jobs(db)
    for args, message in [
        (("pause",), "pause needs --id"),
        (("run", "--id", "1", "--id", "2"), "run takes one --id"),
        (("run", "--id", "999"), "no cron_jobs row with id 999"),
        (("run", "--id", str(ids["broken"]), "--execute"), "is invalid and never runs"),
    ]:
        before = snapshot(db)
        done = run_cli("manage_db_jobs", *args, env=tool_env(db.url, tmp_path))
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr
        assert before.differences(snapshot(db)) == []
    with db.begin(write=False) as conn:
        assert conn.execute(select(func.count()).select_from(cron_job_runs)).scalar_one() == 0
