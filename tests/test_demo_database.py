"""The demo database (the README's first command: `generate_synthetic_load.py --execute` with its
defaults) gives every tool something to show: each tool's dry run, run as a real process with
--json, reports work, and the dry runs together change nothing but their own ledger rows. The
demo is the same rows for the same --seed and --now.

Regression (issue 10): the demo gave the worker its scans and every other tool nothing: no old
notifications, audit logs, payments or attendance to archive, no invoice to remind about, block
or restore, no report email queued, no dead letter.
"""

from __future__ import annotations

import json

from sqlalchemy import delete, select

from ops_lib.jobs.synthetic_load import TABLES
from ops_lib.schema import metadata
from tests.conftest import assert_unchanged, run_cli, snapshot, tool_env

GENERATED = [table for table in metadata.sorted_tables if table in TABLES.values()]
NOW = "2026-11-28 02:00:00"

# tool and arguments -> the counts of its --json answer that must be > 0 on the demo
DRY_RUNS = {
    ("archive_hot_path_data",): [
        "notifications_eligible", "audit_logs_eligible", "payments_eligible",
        "attendance_records_eligible"],
    ("cleanup_stale_devices",): ["stale"],
    ("run_billing_jobs",): [
        "platform_invoices_issued", "attendee_invoices_issued",
        "reminders_due_minus_3", "reminders_due_plus_0", "reminders_due_plus_3",
        "reminders_blocked", "reminder_emails", "guardian_notifications",
        "invoices_now_overdue", "invoices_now_blocked", "invoices_now_paid",
        "institutions_restricted", "institutions_restored", "students_restricted",
        "students_restored"],
    ("run_background_workers",): ["scans_would_take", "emails_would_take"],
    ("manage_dead_letters", "list"): ["scans_failed", "deliveries_failed", "emails_failed"],
    ("manage_dead_letters", "prune"): ["scans_selected", "deliveries_selected",
                                       "emails_selected"],
}


def figures(answer: dict) -> dict[str, int]:
    """A --json answer's counts, and the worker's per-stage figures as `<stage>_<figure>`."""
    found = dict(answer["counts"])
    for row in answer["sections"].get("Stages", []):
        found.update({f"{row['stage']}_{name}": value for name, value in row.items()
                      if isinstance(value, int)})
    return found


def test_on_a_fresh_demo_database_every_tools_dry_run_finds_work_and_changes_nothing(
        db, tmp_path):
    env = tool_env(db.url, tmp_path)
    made = run_cli("generate_synthetic_load", "--execute", env=env)
    assert made.returncode == 0, made.stderr
    before = snapshot(db, exclude=())
    idle: dict[str, dict[str, int]] = {}
    run_ids: set[str] = set()
    for command, counts in DRY_RUNS.items():
        done = run_cli(*command, "--json", env=env)
        assert done.returncode == 0, (command, done.stderr)
        answer = json.loads(done.stdout)
        assert answer["dry_run"] is True, command
        run_ids.add(answer["run_id"])
        found = figures(answer)
        missing = {name: found.get(name, 0) for name in counts if not found.get(name, 0) > 0}
        if missing:
            idle[" ".join(command)] = missing
    assert idle == {}  # every tool, every count: all problems at once
    after = snapshot(db)
    assert_unchanged(before, after, runs=len(DRY_RUNS))  # each dry run wrote its own row only
    assert set(before.new_runs(after)) == run_ids


def test_without_history_the_demo_gives_the_other_tools_nothing_but_stale_devices(db, tmp_path):
    """--no-history is the bare load (what bench_workers.py measures): the history is what
    gives the other tools their work, and turning it off turns all of it off."""
    env = tool_env(db.url, tmp_path)
    made = run_cli("generate_synthetic_load", "--no-history", "--execute", env=env)
    assert made.returncode == 0, made.stderr
    for command, counts in DRY_RUNS.items():
        done = run_cli(*command, "--json", env=env)
        assert done.returncode == 0, (command, done.stderr)
        found = figures(json.loads(done.stdout))
        if command[0] in ("cleanup_stale_devices", "run_background_workers"):
            assert found[counts[0]] > 0, command  # devices and scans are the bare load's
        elif command[0] == "run_billing_jobs":  # fees: this month's invoices, nothing older
            assert found["attendee_invoices_issued"] > 0
            assert all(found[name] == 0 for name in counts[2:]), found
        else:
            assert all(found.get(name, 0) == 0 for name in counts), (command, found)


def demo_rows(db, env, *args: str) -> dict[str, list[dict]]:
    """Generate the demo (as of NOW) into emptied tables; every row it made, by table."""
    with db.begin() as conn:
        for table in reversed(GENERATED):  # children first: foreign keys
            conn.execute(delete(table))
    made = run_cli("generate_synthetic_load", "--now", NOW, *args, "--execute", env=env)
    assert made.returncode == 0, made.stderr
    with db.begin(write=False) as conn:
        return {table.name: [dict(r) for r in conn.execute(
            select(table).order_by(*table.primary_key.columns)).mappings()]
            for table in GENERATED}


def test_the_same_seed_and_now_make_the_same_demo_rows_and_another_seed_other_rows(db, tmp_path):
    env = tool_env(db.url, tmp_path)
    first = demo_rows(db, env, "--seed", "42")
    second = demo_rows(db, env, "--seed", "42")
    other = demo_rows(db, env, "--seed", "43")
    assert all(first.values())  # the demo fills every table the generator writes
    assert first == second
    for name in ("attendance_scan_queue", "attendance_records", "notifications", "audit_logs",
                 "invoices", "payments"):
        assert first[name] != other[name], name
