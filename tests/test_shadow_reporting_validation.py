"""shadow_reporting_validation: two databases made to agree, then to differ by one attendance record
and one invoice amount; the report names exactly those rows, on SQLite and on MariaDB. The
window and lag rules are plain functions, tested here with given lag values (the real replica's
lag is tests/test_replica_lag.py's)."""

from __future__ import annotations

import datetime as dt
import json
import socket

import pytest
from sqlalchemy import insert, select, update

from ops_lib.db import connect
from ops_lib.jobs.reporting_validation import (
    INCONCLUSIVE, MISMATCH, STOPPED, Window, areas, choose_window, compare, default_window,
    first_day_in_lag, judge, lag_horizon)
from ops_lib.errors import BadInput
from ops_lib.replica import NOT_A_REPLICA
from ops_lib.result import JobResult
from ops_lib.schema import (
    attendance_records, attendance_rollups, institutions, invoices, ops_job_runs, plans, students)
from tests.conftest import (
    MYSQL_SERVER_URL, MysqlScratch, assert_unchanged, require_mariadb, run_cli, snapshot,
    sqlite_database, tool_env, unique_name)

TOOL = "shadow_reporting_validation"
WINDOW = ("--from", "2025-03-10", "--to", "2025-03-17")
MARCH, MARCH_END = dt.date(2025, 3, 1), dt.date(2025, 3, 31)


def _fill(url: str) -> None:
    """The same rows on each side: two institutions, two days of attendance and roll-ups, March
    and February invoices."""
    database = connect(url)
    day1, day2 = dt.date(2025, 3, 10), dt.date(2025, 3, 11)
    with database.engine.begin() as conn:
        conn.execute(insert(plans), [{"id": 1, "name": "basic", "monthly_fee_minor": 150000}])
        conn.execute(insert(institutions), [
            {"id": i, "name": f"School {i}", "code": f"S{i}", "plan_id": 1} for i in (1, 2)])
        conn.execute(insert(students), [
            {"id": s, "institution_id": 1 if s <= 3 else 2, "name": f"Student {s}",
             "class_name": "6"} for s in range(1, 7)])
        seen = dt.datetime(2025, 3, 10, 3, 0)
        conn.execute(insert(attendance_records), [
            {"institution_id": 1 if s <= 3 else 2, "student_id": s, "attendance_date": day,
             "first_scan_at": seen, "last_scan_at": seen,
             "status": "late" if s in (2, 5) else "present"}
            for day in (day1, day2) for s in (range(1, 7) if day == day1 else (1, 2, 4, 5))])
        conn.execute(insert(attendance_rollups), [
            {"institution_id": i, "attendance_date": day, "class_name": "6", "present_count": 2,
             "late_count": 1, "absent_count": 0, "enrolled_count": 3}
            for day in (day1, day2) for i in (1, 2)])
        conn.execute(insert(invoices), [
            {"invoice_no": f"P-{i}-{start:%Y%m}", "kind": "platform", "institution_id": i,
             "period_start": start, "period_end": end, "amount_minor": 150000,
             "status": "paid" if start.month == 2 else "due"}
            for i in (1, 2) for start, end in ((dt.date(2025, 2, 1), dt.date(2025, 2, 28)),
                                               (MARCH, MARCH_END))])
    database.engine.dispose()


def _make_them_differ(primary_url: str, target_url: str) -> None:
    """One more attendance record on the primary (student 3, 11 March); one invoice amount
    changed on the target (institution 2's March invoice)."""
    primary, target = connect(primary_url), connect(target_url)
    seen = dt.datetime(2025, 3, 11, 3, 0)
    with primary.engine.begin() as conn:
        conn.execute(insert(attendance_records).values(
            institution_id=1, student_id=3, attendance_date=dt.date(2025, 3, 11),
            first_scan_at=seen, last_scan_at=seen, status="present"))
    with target.engine.begin() as conn:
        conn.execute(update(invoices).where(invoices.c.invoice_no == "P-2-202503")
                     .values(amount_minor=140000))
    primary.engine.dispose()
    target.engine.dispose()


@pytest.fixture(params=["sqlite", "mariadb"])
def two_databases(request, tmp_path):
    """(primary URL, target URL): two SQLite files, or two MariaDB databases, same rows."""
    if request.param == "sqlite":
        urls = sqlite_database(tmp_path, "primary.db"), sqlite_database(tmp_path, "copy.db")
        scratches = []
    else:
        require_mariadb()
        scratches = [MysqlScratch(unique_name("ops_val")) for _ in range(2)]
        for scratch in scratches:
            scratch.create()
        urls = scratches[0].url, scratches[1].url
    try:
        for url in urls:
            _fill(url)
        yield urls
    finally:
        for scratch in scratches:
            scratch.drop()


def _ledger_row(url: str, run_id: str):
    database = connect(url)
    with database.engine.connect() as conn:
        row = conn.execute(select(ops_job_runs).where(ops_job_runs.c.run_id == run_id)).one()
    database.engine.dispose()
    return row


def test_two_databases_agree_then_the_report_names_exactly_the_two_rows_that_differ(
        two_databases, tmp_path):
    primary_url, target_url = two_databases
    env = tool_env(primary_url, tmp_path)
    equal = run_cli(TOOL, *WINDOW, "--target-url", target_url, "--json", env=env)
    assert equal.returncode == 0, equal.stderr
    answer = json.loads(equal.stdout)
    assert answer["status"] == "ok"
    # 2 days x 2 institutions of records and of roll-ups; 2 institutions' March invoices
    # (February's period ends before the window).
    assert answer["stop_reason"] == "equal: 10 groups in 3 areas"
    assert answer["counts"] == {"areas_checked": 3, "groups_compared": 10, "mismatches": 0,
                                "inconclusive": 0}
    assert answer["sections"] == {"attendance_records": [], "attendance_rollups": [],
                                  "invoices": []}

    _make_them_differ(primary_url, target_url)
    before = snapshot(connect(primary_url)), snapshot(connect(target_url))
    differ = run_cli(TOOL, *WINDOW, "--json",
                     env=tool_env(primary_url, tmp_path, OPS_VALIDATION_TARGET_URL=target_url))
    assert differ.returncode == 1, differ.stderr
    answer = json.loads(differ.stdout)
    assert answer["sections"] == {
        "attendance_records": [{
            "attendance_date": "2025-03-11", "institution_id": 1,
            "primary": {"records": 3, "present": 2}, "target": {"records": 2, "present": 1},
            "verdict": MISMATCH}],
        "attendance_rollups": [],
        "invoices": [{
            "period_start": "2025-03-01", "period_end": "2025-03-31", "institution_id": 2,
            "status": "due", "primary": {"amount_minor": 150000},
            "target": {"amount_minor": 140000}, "verdict": MISMATCH}],
    }
    assert answer["status"] == "failed"
    assert answer["counts"]["mismatches"] == 2 and answer["counts"]["inconclusive"] == 0
    error = ("2 mismatching rows (primary vs target): attendance_records "
             "attendance_date=2025-03-11 institution_id=1 (records 3 vs 2, present 2 vs 1); "
             "invoices period_start=2025-03-01 period_end=2025-03-31 institution_id=2 "
             "status=due (amount_minor 150000 vs 140000)")
    assert answer["error"] == error
    assert "target lag: not a replica (a copy): every mismatch is a failure" in answer["notes"]
    ledger = _ledger_row(primary_url, answer["run_id"])
    assert (ledger.status, ledger.error, ledger.stop_reason) == (
        "failed", error, "2 mismatching rows")
    # Read-only: nothing changed on either side but the run's own ledger row on the primary.
    assert_unchanged(before[0], snapshot(connect(primary_url)), runs=1)
    assert_unchanged(before[1], snapshot(connect(target_url)), runs=0)


def test_the_plain_report_shows_both_values_of_each_mismatching_row(tmp_path):
    primary_url = sqlite_database(tmp_path, "primary.db")
    target_url = sqlite_database(tmp_path, "copy.db")
    _fill(primary_url)
    _fill(target_url)
    _make_them_differ(primary_url, target_url)
    done = run_cli(TOOL, *WINDOW, "--target-url", target_url, env=tool_env(primary_url, tmp_path))
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert ('attendance_records: attendance_date=2025-03-11 institution_id=1 '
            'primary="records=3 present=2" target="records=2 present=1" verdict=mismatch'
            ) in lines
    assert ('invoices: period_start=2025-03-01 period_end=2025-03-31 institution_id=2 '
            'status=due primary=amount_minor=150000 target=amount_minor=140000 '
            'verdict=mismatch') in lines
    assert "counts: areas_checked=3 groups_compared=10 inconclusive=0 mismatches=2" in lines
    assert ("note: window: attendance_date 2025-03-10 to 2025-03-17 (exclusive); invoices of "
            "every period overlapping it") in lines
    assert [line for line in lines if line.startswith("sql: ")] == [
        f"sql: {statement}" for statement in _statements(primary_url, "2025-03-10", "2025-03-17")]
    assert lines[-1] == "stopped: 2 mismatching rows"


def _statements(url: str, start: str, end: str) -> list[str]:
    database = connect(url)
    window = Window(dt.date.fromisoformat(start), dt.date.fromisoformat(end))
    shown = [" ".join(str(area.statement.compile(
        dialect=database.engine.dialect, compile_kwargs={"literal_binds": True})).split()) + ";"
        for area in areas(window)]
    database.engine.dispose()
    return shown


def test_differences_outside_the_window_are_not_compared(tmp_path):
    primary_url = sqlite_database(tmp_path, "primary.db")
    target_url = sqlite_database(tmp_path, "copy.db")
    _fill(primary_url)
    _fill(target_url)
    primary = connect(primary_url)
    seen = dt.datetime(2025, 3, 17, 3, 0)
    with primary.engine.begin() as conn:
        # --to's own day is not compared; nor is February's period (it ends before --from).
        conn.execute(insert(attendance_records).values(
            institution_id=1, student_id=1, attendance_date=dt.date(2025, 3, 17),
            first_scan_at=seen, last_scan_at=seen, status="present"))
        conn.execute(insert(attendance_records).values(
            institution_id=1, student_id=1, attendance_date=dt.date(2025, 3, 9),
            first_scan_at=seen, last_scan_at=seen, status="present"))
        conn.execute(update(invoices).where(invoices.c.invoice_no == "P-1-202502")
                     .values(amount_minor=1))
    primary.engine.dispose()
    env = tool_env(primary_url, tmp_path, OPS_VALIDATION_TARGET_URL=target_url)
    done = run_cli(TOOL, *WINDOW, "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["counts"]["groups_compared"] == 10
    # A window that holds them finds all three.
    wider = run_cli(TOOL, "--from", "2025-02-28", "--to", "2025-03-18", "--json", env=env)
    assert wider.returncode == 1, wider.stderr
    sections = json.loads(wider.stdout)["sections"]
    assert [row["attendance_date"] for row in sections["attendance_records"]] == [
        "2025-03-09", "2025-03-17"]
    assert [row["primary"] for row in sections["attendance_records"]] == [
        {"records": 1, "present": 1, "late": 0}] * 2
    assert [row["target"] for row in sections["attendance_records"]] == [None, None]
    assert [(row["period_start"], row["primary"], row["target"])
            for row in sections["invoices"]] == [
        ("2025-02-01", {"amount_minor": 1}, {"amount_minor": 150000})]


def test_the_replica_setting_is_the_default_target(tmp_path):
    primary_url = sqlite_database(tmp_path, "primary.db")
    target_url = sqlite_database(tmp_path, "copy.db")
    _fill(primary_url)
    env = tool_env(primary_url, tmp_path, OPS_REPLICA_DATABASE_URL=target_url)
    done = run_cli(TOOL, *WINDOW, "--json", env=env)
    assert done.returncode == 1, done.stderr
    answer = json.loads(done.stdout)
    assert f"target {target_url} (replica_database_url, OPS_REPLICA_DATABASE_URL)" in answer[
        "notes"]
    assert answer["counts"]["mismatches"] == 10  # every group is missing on the empty copy
    assert answer["error"] == (
        "10 mismatching rows (primary vs target): attendance_records attendance_date=2025-03-10 "
        "institution_id=1 (missing on target); attendance_records attendance_date=2025-03-10 "
        "institution_id=2 (missing on target); attendance_records attendance_date=2025-03-11 "
        "institution_id=1 (missing on target); 7 more")


def test_the_default_window_is_the_last_seven_days_before_today_for_a_copy(tmp_path):
    primary_url = sqlite_database(tmp_path, "primary.db")
    target_url = sqlite_database(tmp_path, "copy.db")
    before = dt.datetime.now(dt.timezone.utc).date()
    done = run_cli(TOOL, "--json", env=tool_env(primary_url, tmp_path,
                                                OPS_VALIDATION_TARGET_URL=target_url))
    after = dt.datetime.now(dt.timezone.utc).date()
    assert done.returncode == 0, done.stderr
    windows = {f"window: attendance_date {default_window(_midnight(day), NOT_A_REPLICA)}; "
               "invoices of every period overlapping it" for day in (before, after)}
    assert windows & set(json.loads(done.stdout)["notes"])


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_target_exits_3_naming_the_target_and_its_masked_url(tmp_path):
    primary_url = sqlite_database(tmp_path)
    target = f"mysql+pymysql://ops:s3cret-pw@127.0.0.1:{_free_port()}/platform"
    done = run_cli(TOOL, *WINDOW, "--target-url", target, env=tool_env(primary_url, tmp_path))
    assert done.returncode == 3
    [line] = [line for line in done.stderr.splitlines() if "error" in line]
    assert line.startswith("error: target: cannot use the database at "
                           "mysql+pymysql://ops:***@127.0.0.1:")
    assert "s3cret-pw" not in done.stderr + done.stdout
    database = connect(primary_url)
    with database.engine.connect() as conn:
        [(status, args)] = conn.execute(select(ops_job_runs.c.status, ops_job_runs.c.args)).all()
    database.engine.dispose()
    assert status == "failed"
    assert json.loads(args)["target_url"] == target.replace("s3cret-pw", "***")


def test_a_missing_sqlite_target_is_bad_input_and_creates_nothing(tmp_path):
    primary_url = sqlite_database(tmp_path)
    missing = tmp_path / "nowhere" / "copy.db"
    done = run_cli(TOOL, "--target-url", f"sqlite:///{missing}",
                   env=tool_env(primary_url, tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == f"error: target: no SQLite database at {missing}"
    assert not missing.parent.exists()


@pytest.mark.parametrize("args, message", [
    (("--from", "2025-13-01"),
     "error: Invalid value for '--from': '2025-13-01' does not match the format '%Y-%m-%d' "
     f"(see {TOOL}.py --help)"),
    (("--from", "2025-03-17", "--to", "2025-03-10"),
     "error: --from 2025-03-17 must be before --to 2025-03-10 (--to is the first day not "
     "compared)"),
])
def test_bad_dates_exit_2_with_one_line_before_connecting(args, message, tmp_path):
    never = tmp_path / "never.db"  # not created: the tool stops before connecting
    done = run_cli(TOOL, *args, "--target-url", "sqlite:///copy.db",
                   env=tool_env(f"sqlite:///{never}", tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [message]
    assert not never.exists()


def test_no_target_configured_exits_2_saying_how_to_give_one(tmp_path):
    done = run_cli(TOOL, env=tool_env(sqlite_database(tmp_path), tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: no target database to compare with: give --target-url URL, or set "
        "OPS_VALIDATION_TARGET_URL (or OPS_REPLICA_DATABASE_URL, the read replica)"]


# The window and the lag, with given lag values.

NOW = dt.datetime(2026, 11, 28, 10, 0, 0)


def test_the_horizon_is_now_minus_the_larger_of_the_two_lags():
    assert lag_horizon(NOW, 5.0, 30.0) == NOW - dt.timedelta(seconds=30)
    assert lag_horizon(NOW, 30.0, 5.0) == NOW - dt.timedelta(seconds=30)
    assert lag_horizon(NOW, NOT_A_REPLICA, NOT_A_REPLICA) is None
    assert lag_horizon(NOW, 2.0, None) is STOPPED  # replication stopped during the check


def test_the_default_window_ends_before_the_day_the_lag_reaches_into():
    assert default_window(NOW, NOT_A_REPLICA) == Window(dt.date(2026, 11, 21),
                                                        dt.date(2026, 11, 28))
    assert default_window(NOW, 0.0) == Window(dt.date(2026, 11, 21), dt.date(2026, 11, 28))
    # 10 hours and a second behind: the replica may still miss the end of the 27th.
    assert default_window(NOW, 36001.0).end == dt.date(2026, 11, 27)
    assert default_window(NOW, None).end == dt.date(2026, 11, 28)  # stopped: today, all in lag
    assert choose_window(None, dt.date(2026, 11, 5), NOW, 3.0) == Window(
        dt.date(2026, 10, 29), dt.date(2026, 11, 5))
    with pytest.raises(BadInput, match="--from 2026-12-01 must be before --to 2026-11-28"):
        choose_window(dt.date(2026, 12, 1), None, NOW, NOT_A_REPLICA)


def test_a_to_later_than_now_minus_the_lag_makes_the_last_days_inconclusive():
    window = Window(dt.date(2026, 11, 22), dt.date(2026, 11, 29))
    assert first_day_in_lag(window, lag_horizon(NOW, 5.0, 5.0)) == dt.date(2026, 11, 28)
    assert first_day_in_lag(window, lag_horizon(NOW, NOT_A_REPLICA, NOT_A_REPLICA)) is None
    assert first_day_in_lag(window, lag_horizon(NOW, None, 1.0)) == window.start
    before = Window(dt.date(2026, 11, 21), dt.date(2026, 11, 28))
    assert first_day_in_lag(before, lag_horizon(NOW, 5.0, 5.0)) is None


def test_a_lag_that_grows_during_the_check_makes_the_days_it_reaches_inconclusive():
    window = default_window(NOW, 5.0)  # chosen before: ends on the 28th
    assert window.end == dt.date(2026, 11, 28)
    grown = lag_horizon(NOW, 5.0, 11 * 3600.0)  # 23:00 on the 27th
    assert first_day_in_lag(window, grown) == dt.date(2026, 11, 27)


def _figures(records: dict[dt.date, int]) -> dict[tuple, tuple[int, ...]]:
    return {(day, 1): (count, count, 0) for day, count in records.items()}


def test_a_group_on_one_side_only_is_a_mismatch_with_all_its_figures_on_that_side():
    window = Window(dt.date(2026, 11, 1), dt.date(2026, 11, 8))
    invoices_area = areas(window)[2]
    key = (dt.date(2026, 11, 1), dt.date(2026, 11, 30), 7, "paid")
    rows = compare(invoices_area, {}, {key: (2, 300000)}, None)
    assert rows == [{"period_start": dt.date(2026, 11, 1), "period_end": dt.date(2026, 11, 30),
                     "institution_id": 7, "status": "paid", "primary": None,
                     "target": {"invoices": 2, "amount_minor": 300000}, "verdict": MISMATCH}]
    # The period's last day decides: November is still open when the lag reaches the 28th.
    inside = compare(invoices_area, {}, {key: (2, 300000)}, dt.date(2026, 11, 28))
    assert [row["verdict"] for row in inside] == [INCONCLUSIVE]


def test_a_mismatch_inside_the_lag_is_inconclusive_and_keeps_the_run_ok():
    window = Window(dt.date(2026, 11, 22), dt.date(2026, 11, 29))
    checked = areas(window)
    days = {dt.date(2026, 11, 27): 5, dt.date(2026, 11, 28): 6}
    primary = [_figures(days), {}, {}]
    late = [_figures({**days, dt.date(2026, 11, 28): 5}), {}, {}]
    result = JobResult("test", True)
    judge(result, checked, primary, late,
          first_day_in_lag(window, lag_horizon(NOW, 5.0, 5.0)))
    assert [row["verdict"] for row in result.sections[0].rows] == [INCONCLUSIVE]
    assert (result.status, result.exit_code) == ("ok", 1)
    assert result.stop_reason.startswith("inconclusive: 1 mismatching rows inside the replica lag")
    assert result.counts == {"areas_checked": 3, "groups_compared": 2, "mismatches": 0,
                             "inconclusive": 1}

    both = [_figures({dt.date(2026, 11, 27): 4, dt.date(2026, 11, 28): 5}), {}, {}]
    result = JobResult("test", True)
    judge(result, checked, primary, both,
          first_day_in_lag(window, lag_horizon(NOW, 5.0, 5.0)))
    assert [row["verdict"] for row in result.sections[0].rows] == [MISMATCH, INCONCLUSIVE]
    assert (result.status, result.exit_code) == ("failed", 1)
    assert result.stop_reason == "1 mismatching rows, 1 inconclusive (inside the replica lag)"
    assert result.error == ("1 mismatching rows (primary vs target): attendance_records "
                            "attendance_date=2026-11-27 institution_id=1 (records 5 vs 4, "
                            "present 5 vs 4)")

    result = JobResult("test", True)
    judge(result, checked, primary, primary, first_day_in_lag(window, STOPPED))
    assert (result.status, result.exit_code, result.stop_reason) == (
        "ok", 0, "equal: 2 groups in 3 areas")
