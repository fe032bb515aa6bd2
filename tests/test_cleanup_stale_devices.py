"""cleanup_stale_devices: who is stale, the cut-off, never-seen devices, LIMIT, and the dry run."""

from __future__ import annotations

import datetime as dt
import json

from conftest import run_cli, snapshot, tool_env
from sqlalchemy import insert, select

from ops_lib.cli import read_table_settings
from ops_lib.jobs import stale_devices
from ops_lib.runtime import Budget, RunContext, StopSignal
from ops_lib.schema import guardians, notification_devices
from ops_lib.settings import load_settings
from ops_lib.timeutil import utcnow

NOW = dt.datetime(2026, 6, 1, 12, 0, 0)
DAY = dt.timedelta(days=1)
CUT = NOW - 270 * DAY


def cleanup(db, dry_run=False, limit=1000):
    settings = load_settings(env={}).with_table(read_table_settings(db))
    ctx = RunContext(db=db, settings=settings, run_id="test", tool="cleanup_stale_devices",
                     dry_run=dry_run, budget=Budget(None), stop=StopSignal())
    return stale_devices.run(ctx, limit=limit, now=NOW)


def seed(db):
    with db.begin() as conn:
        conn.execute(insert(guardians), [{"id": 1, "name": "Guardian"}])
        conn.execute(insert(notification_devices), [
            {"id": i, "guardian_id": 1, "token": f"tok-{i}", "is_active": active,
             "last_seen_at": seen, "created_at": created}
            for i, active, seen, created in [
                (1, True, CUT - dt.timedelta(seconds=1), CUT - 400 * DAY),  # stale
                (2, True, CUT, CUT - 400 * DAY),                           # exactly at the cut-off
                (3, True, NOW - DAY, CUT - 400 * DAY),                     # seen yesterday
                (4, True, None, CUT - DAY),                                # never seen, old: stale
                (5, True, None, NOW - 10 * DAY),                           # never seen, new
                (6, False, CUT - 100 * DAY, CUT - 400 * DAY),              # already inactive
                (7, True, CUT - 50 * DAY, CUT - 400 * DAY),                # stale
            ]
        ])


def devices(db):
    with db.engine.connect() as conn:
        return {r["id"]: r for r in conn.execute(
            select(notification_devices).order_by(notification_devices.c.id)).mappings()}


def test_devices_not_seen_for_more_than_270_days_are_deactivated_with_a_reason(db):
    seed(db)
    result = cleanup(db)
    after = devices(db)
    assert [i for i, d in after.items() if not d["is_active"]] == [1, 4, 6, 7]
    assert result.counts["deactivated"] == 3
    assert after[1]["deactivated_at"] == NOW
    assert after[1]["deactivation_reason"] == "stale: not seen for more than 270 days"
    assert after[4]["deactivation_reason"] == "stale: never seen, created more than 270 days ago"
    assert after[6]["deactivated_at"] is None  # already inactive: left as it was
    assert after[2]["is_active"] and after[2]["deactivated_at"] is None  # at the cut-off
    assert cleanup(db).counts["deactivated"] == 0


def test_limit_caps_a_run_and_the_stalest_go_first(db):
    seed(db)
    result = cleanup(db, limit=2)
    assert [i for i, d in devices(db).items() if not d["is_active"]] == [4, 6, 7]
    assert result.counts["deactivated"] == 2
    assert result.stop_reason == "limit reached, 1 left"
    cleanup(db, limit=2)
    assert [i for i, d in devices(db).items() if not d["is_active"]] == [1, 4, 6, 7]


def test_dry_run_shows_the_count_and_a_sample_and_changes_nothing(db, db_url, tmp_path):
    seed(db)
    before = snapshot(db)
    result = cleanup(db, dry_run=True)
    assert result.counts["stale"] == 3
    sample = result.sections[0].rows
    assert [r["id"] for r in sample] == [4, 7, 1]
    assert sample[0]["judged_by"] == "created_at (never seen)"
    assert "UPDATE notification_devices" in result.statements[0]
    proc = run_cli("cleanup_stale_devices", "--json", env=tool_env(db_url, tmp_path))
    assert proc.returncode == 0, proc.stderr
    output = json.loads(proc.stdout)
    # The tool judges by today's clock, not NOW: count what is stale today.
    cutoff_today = utcnow() - 270 * DAY
    stale_today = [i for i, d in devices(db).items() if d["is_active"]
                   and (d["last_seen_at"] or d["created_at"]) < cutoff_today]
    assert output["dry_run"] is True and output["counts"]["stale"] == len(stale_today) >= 3
    assert output["stop_reason"] == "dry run: nothing changed"
    assert snapshot(db) == before


def test_a_dry_run_that_finds_more_stale_devices_than_its_limit_says_how_many_it_leaves(db):
    # It said "no more work" while 1,330 stale devices were beyond its LIMIT.
    seed(db)
    before = snapshot(db)
    assert cleanup(db, dry_run=True, limit=2).stop_reason == (
        "dry run: nothing changed; limit reached, 1 left")
    assert cleanup(db, dry_run=True, limit=3).stop_reason == "dry run: nothing changed"
    assert snapshot(db) == before


def test_the_stale_device_days_setting_moves_the_cutoff(db_url, db, tmp_path):
    seed(db)
    with db.begin() as conn:
        conn.execute(insert(notification_devices), [
            {"id": 8, "guardian_id": 1, "token": "tok-8", "is_active": True,
             "last_seen_at": utcnow() - 11 * DAY, "created_at": utcnow() - 20 * DAY}])
    env = tool_env(db_url, tmp_path, OPS_STALE_DEVICE_DAYS="10")
    proc = run_cli("cleanup_stale_devices", "--execute", env=env)
    assert proc.returncode == 0, proc.stderr
    assert not devices(db)[8]["is_active"]
    assert "stale: not seen for more than 10 days" == devices(db)[8]["deactivation_reason"]
