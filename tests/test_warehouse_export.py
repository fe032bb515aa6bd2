"""export_operational_warehouse_batch: the watermark window, the snapshot, the files DuckDB reads
back, a killed run, and the refusals (issue 14)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from sqlalchemy import create_engine, insert, select, text, update

from ops_lib.db import connect
from ops_lib.jobs.warehouse_export import job
from ops_lib.jobs.warehouse_export.window import after
from ops_lib.schema import attendance_records, audit_logs, audit_logs_archive, institutions, \
    ops_export_watermarks, students
from ops_lib.timeutil import utcnow
from tests.conftest import REPO, job_context, run_cli, snapshot, tool_env

TOOL = "export_operational_warehouse_batch"
SECOND = dt.timedelta(seconds=1)
COLUMNS = [c.name for c in attendance_records.columns]


def seed_students(conn, count: int, first: int = 1) -> None:
    conn.execute(insert(institutions), [{"id": 1, "name": "School", "code": "S1"}])
    conn.execute(insert(students), [{"id": i, "institution_id": 1, "name": f"Student {i}",
                                     "card_uid": f"C{i}"} for i in range(first, first + count)])


def record(id_: int, updated_at: dt.datetime, **extra) -> dict:
    day = dt.date(2026, 9, 1) + dt.timedelta(days=id_ % 70)
    row = {"id": id_, "institution_id": 1, "student_id": id_, "attendance_date": day,
           "first_scan_at": dt.datetime(2026, 9, 1, 7, 30) + id_ * SECOND,
           "last_scan_at": dt.datetime(2026, 9, 1, 8, 0) + id_ * SECOND,
           "scan_count": 1 + id_ % 3, "status": "late" if id_ % 4 == 0 else "present",
           "is_archived": False, "created_at": updated_at - 60 * SECOND,
           "updated_at": updated_at}
    row.update(extra)
    return row


def source_rows(db) -> dict[int, tuple]:
    with db.engine.connect() as conn:
        return {r.id: tuple(r) for r in conn.execute(select(attendance_records))}


def export(url: str, tmp_path: Path, reader: str = "auto", fmt: str = "parquet",
           full_refresh: bool = False, dry_run: bool = False, **env: str):
    """One run of the job, in this process (as run_tool calls it)."""
    ctx = job_context(url, tmp_path, dry_run=dry_run, OPS_EXPORT_DIR=str(tmp_path / "exports"),
                      OPS_EXPORT_LAG_SECONDS="0", OPS_EXPORT_READER=reader, **env)
    try:
        return job.run(ctx, "attendance_records", fmt=fmt, partition_by="month",
                       full_refresh=full_refresh)
    finally:
        ctx.db.engine.dispose()


def table_folder(tmp_path: Path, table: str = "attendance_records") -> Path:
    return tmp_path / "exports" / table


def manifests(folder: Path) -> list[dict]:
    from ops_lib.jobs.warehouse_export.files import published_batches

    return published_batches(folder)


def read_back(folder: Path, latest: bool = False, where: str = "") -> list[tuple]:
    """Rows of the complete batches (with _SUCCESS) as DuckDB reads them, in the source's
    column order; `latest`: the latest version of each id (the docs' query)."""
    complete = [p.name.split("=", 1)[1] for p in folder.glob("batch=*")
                if (p / "_SUCCESS").exists()]
    if not complete:
        return []
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    query = (f"SELECT {', '.join(COLUMNS)} FROM read_parquet('{folder}/batch=*/**/*.parquet', "
             "hive_partitioning = true) WHERE batch IN (SELECT unnest(?))"
             + (f" AND {where}" if where else "")
             + (" QUALIFY row_number() OVER (PARTITION BY id ORDER BY updated_at DESC, "
                "batch DESC) = 1" if latest else "") + " ORDER BY id, batch")
    rows = con.execute(query, [complete]).fetchall()
    con.close()
    return [_naive(row) for row in rows]


def _naive(row: tuple) -> tuple:
    return tuple(v.astimezone(dt.timezone.utc).replace(tzinfo=None)
                 if isinstance(v, dt.datetime) else v for v in row)


def watermark_row(db):
    with db.engine.connect() as conn:
        return conn.execute(select(ops_export_watermarks)).one()


@pytest.fixture(params=["connectorx", "pymysql"])
def mariadb_reader(request, mariadb_url):
    """The MariaDB scratch database and each reader: connectorx (the [fast] extra) and the
    PyMySQL fallback."""
    return mariadb_url, request.param


# --- the window ----------------------------------------------------------------------------------


def test_keyset_after_is_the_tuple_order():
    from sqlalchemy import column

    a, b = column("a"), column("b")
    clause = after([a, b], (5, 9))
    sql = str(clause.compile(compile_kwargs={"literal_binds": True}))
    assert sql == "a > 5 OR a = 5 AND b > 9"


def _successive_runs(url: str, tmp_path: Path, reader: str) -> None:
    db = connect(url)
    base = utcnow().replace(microsecond=0) - dt.timedelta(days=1)
    with db.begin() as conn:
        seed_students(conn, 40)
        conn.execute(insert(attendance_records), [record(i, base + i * SECOND)
                                                  for i in range(1, 31)])
    first = export(url, tmp_path, reader)
    assert first.counts["rows"] == 30, first.notes
    mark = watermark_row(db)
    assert (mark.watermark_at, json.loads(mark.watermark_key)) == (base + 30 * SECOND, [30])

    # Between the runs: row 5 changes twice, row 7 once, row 31 is new, and row 32 shares the
    # watermark's second (30 s) with a higher id: exported next, while row 30 is not again.
    with db.begin() as conn:
        r = attendance_records
        conn.execute(update(r).where(r.c.id == 5).values(status="late",
                                                          updated_at=base + 100 * SECOND))
        conn.execute(update(r).where(r.c.id == 5).values(status="absent", scan_count=9,
                                                          updated_at=base + 200 * SECOND))
        conn.execute(update(r).where(r.c.id == 7).values(is_archived=True,
                                                          updated_at=base + 120 * SECOND))
        conn.execute(insert(r), [record(31, base + 150 * SECOND),
                                 record(32, base + 30 * SECOND)])
    second = export(url, tmp_path, reader)
    assert second.counts["rows"] == 4, second.notes
    batches = manifests(table_folder(tmp_path))
    assert [m["row_count"] for m in batches] == [30, 4]
    assert batches[1]["watermark_from"] == {"at": (base + 30 * SECOND).isoformat(), "key": [30]}
    assert batches[1]["watermark_to"] == {"at": (base + 200 * SECOND).isoformat(), "key": [5]}
    second_rows = read_back(table_folder(tmp_path),
                            where=f"batch = '{batches[1]['batch'].split('=', 1)[1]}'")
    assert [row[0] for row in second_rows] == [5, 7, 31, 32]
    source = source_rows(db)
    assert second_rows[0] == source[5] and source[5][7] == "absent"  # its latest values, once
    # The docs' latest-version query over both batches gives exactly the table.
    assert read_back(table_folder(tmp_path), latest=True) == [source[i] for i in sorted(source)]
    third = export(url, tmp_path, reader)
    assert third.counts["rows"] == 0 and len(manifests(table_folder(tmp_path))) == 2
    db.engine.dispose()


def test_successive_runs_export_the_latest_version_of_every_changed_row_on_sqlite(tmp_path):
    from tests.conftest import sqlite_database

    _successive_runs(sqlite_database(tmp_path), tmp_path, "auto")


@pytest.mark.mariadb
def test_successive_runs_export_the_latest_version_of_every_changed_row_on_mariadb(
        mariadb_reader, tmp_path):
    url, reader = mariadb_reader
    _successive_runs(url, tmp_path, reader)


@pytest.mark.mariadb
def test_a_row_of_a_transaction_open_during_the_previous_run_is_not_lost(mariadb_reader,
                                                                        tmp_path):
    """Airbyte's loss: a transaction stamps a row, a run reads past the stamp before it commits,
    and the row falls below the watermark for good. The bound stays below open transactions."""
    url, reader = mariadb_reader
    engine = connect(url).engine  # READ COMMITTED, as the platform's writers
    # Keys of this test's own (ids, and students for the unique student-day): the rows an
    # earlier test deleted may still wait for InnoDB's purge, and inserting one of their keys
    # again locks the gap before it, which made the two writers wait for each other.
    k = random.randrange(1, 10**6) * 100
    old = utcnow() - dt.timedelta(hours=1)
    with engine.begin() as conn:
        seed_students(conn, 10, first=k + 1)
        conn.execute(insert(attendance_records), [record(k + i, old + i * SECOND,
                                                         student_id=k + i)
                                                  for i in range(1, 4)])
    late = engine.connect()  # the second connection: a transaction that commits late
    try:
        late.begin()
        late.execute(text("INSERT INTO attendance_records (id, institution_id, student_id, "
                          "attendance_date, first_scan_at, last_scan_at, updated_at) VALUES "
                          f"({k + 9}, 1, {k + 9}, '2026-11-01', UTC_TIMESTAMP(), UTC_TIMESTAMP(), "
                          "UTC_TIMESTAMP())"))
        stamped = late.execute(text("SELECT updated_at FROM attendance_records WHERE id = :id"),
                               {"id": k + 9}).scalar_one()

        def server_clock_after(moment: dt.datetime) -> None:
            while True:  # the server clock always moves on: wait for it, not for a sleep
                with engine.connect() as conn:
                    if conn.execute(text("SELECT UTC_TIMESTAMP()")).scalar_one() > moment:
                        return
                time.sleep(0.05)

        # Another writer commits a row stamped after the open transaction's row.
        server_clock_after(stamped)
        with engine.begin() as conn:
            conn.execute(insert(attendance_records), [record(k + 4, stamped + SECOND,
                                                             student_id=k + 4)])
        server_clock_after(stamped + SECOND)
        first = export(url, tmp_path, reader)
        assert any("held back" in note for note in first.notes), first.notes
        exported = {row[0] for row in read_back(table_folder(tmp_path))}
        assert exported == {k + 1, k + 2, k + 3}  # row 4 waits: its time is past the bound
        late.commit()
        late.close()
        # The next run exports both. Other tests' transactions on this server may hold its bound
        # back too: then it says so, and a later run takes them (never a silent gap).
        while True:
            second = export(url, tmp_path, reader)
            if {row[0] - k for row in read_back(table_folder(tmp_path))} == {1, 2, 3, 4, 9}:
                break
            assert any("held back" in note for note in second.notes), second.notes
    finally:
        late.close()  # rolls back what is open (the DROP DATABASE at the end waits for it)
    engine.dispose()


# --- the files -----------------------------------------------------------------------------------


@pytest.mark.mariadb
def test_files_read_back_with_duckdb_give_the_source_rows_with_their_types_and_checksums(
        mariadb_reader, tmp_path):
    url, reader = mariadb_reader
    db = connect(url)
    base = utcnow() - dt.timedelta(days=2)
    with db.begin() as conn:
        seed_students(conn, 300)
        conn.execute(insert(attendance_records), [
            record(i, base + (i // 3) * SECOND, is_archived=i % 5 == 0) for i in range(1, 301)])
    result = export(url, tmp_path, reader)
    assert result.counts["rows"] == 300
    folder = table_folder(tmp_path)
    source = source_rows(db)
    assert read_back(folder) == [source[i] for i in sorted(source)]
    con = duckdb.connect()
    types = {name: kind for name, kind, *_ in con.execute(
        f"DESCRIBE SELECT * FROM read_parquet('{folder}/batch=*/**/*.parquet', "
        "hive_partitioning = true)").fetchall()}
    assert types["attendance_date"] == "DATE" and types["id"] == "BIGINT"
    assert types["updated_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["is_archived"] == "BOOLEAN" and types["status"] == "VARCHAR"
    [manifest] = manifests(folder)
    batch = folder / manifest["batch"]
    assert sum(f["rows"] for f in manifest["files"]) == manifest["row_count"] == 300
    for entry in manifest["files"]:
        path = batch / entry["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert path.stat().st_size == entry["bytes"]
        assert con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()[0] == \
            entry["rows"]
    assert manifest["cursor"] == ["updated_at", "id"] and manifest["reader"] == reader
    con.close()
    db.engine.dispose()


def test_audit_logs_are_read_with_their_archive_by_created_at(tmp_path):
    from tests.conftest import sqlite_database

    url = sqlite_database(tmp_path)
    db = connect(url)
    old = utcnow() - dt.timedelta(days=500)
    entry = {"actor": "support", "action": "update", "entity_type": "invoice",
             "details": {"field": "status"}}
    with db.begin() as conn:
        conn.execute(insert(audit_logs), [dict(entry, id=2, created_at=old + SECOND),
                                          dict(entry, id=4, created_at=old + 3 * SECOND)])
        conn.execute(insert(audit_logs_archive), [dict(entry, id=1, created_at=old),
                                                  dict(entry, id=3, created_at=old + 2 * SECOND)])
    ctx = job_context(url, tmp_path, OPS_EXPORT_DIR=str(tmp_path / "exports"),
                      OPS_EXPORT_LAG_SECONDS="0")
    result = job.run(ctx, "audit_logs", fmt="jsonl")
    assert result.counts["rows"] == 4
    [manifest] = manifests(table_folder(tmp_path, "audit_logs"))
    lines = [json.loads(line) for f in manifest["files"] for line in
             (table_folder(tmp_path, "audit_logs") / manifest["batch"] / f["path"]).read_text()
             .splitlines()]
    assert sorted(line["id"] for line in lines) == [1, 2, 3, 4]
    assert manifest["watermark_to"] == {"at": (old + 3 * SECOND).isoformat(), "key": [4]}
    db.engine.dispose()


# --- the tool ------------------------------------------------------------------------------------


def _env(url: str, tmp_path: Path, **extra: str) -> dict:
    return tool_env(url, tmp_path, OPS_EXPORT_DIR=str(tmp_path / "exports"),
                    OPS_EXPORT_LAG_SECONDS="0", **extra)


@pytest.mark.parametrize("name", ["users; DROP TABLE invoices", "users", "ops_job_runs", ""])
def test_an_unknown_table_is_refused_before_connecting_with_one_line_and_exit_2(name, tmp_path):
    # The database URL points nowhere: a refusal that connected would say so instead.
    done = run_cli(TOOL, name, "--execute",
                   env=_env("mysql+pymysql://nobody@127.0.0.1:9/none", tmp_path))
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: Invalid value for 'TABLE'") and "attendance_records" in line
    assert not (tmp_path / "exports").exists()


def test_an_output_folder_under_a_regular_file_is_refused_with_exit_2_before_reading(
        db_url, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    done = run_cli(TOOL, "attendance_records", "--execute", "--output-dir",
                   str(blocker / "exports"), env=_env(db_url, tmp_path))
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line == (f"error: output folder {blocker / 'exports'} cannot be created: {blocker} "
                    "is a file, not a folder")
    assert blocker.read_text() == "x"


def test_the_dry_run_and_a_full_refresh_without_execute_change_nothing_and_create_no_folder(
        db, db_url, tmp_path):
    base = utcnow() - dt.timedelta(days=1)
    with db.begin() as conn:
        seed_students(conn, 5)
        conn.execute(insert(attendance_records), [record(i, base + i * SECOND)
                                                  for i in range(1, 6)])
    assert run_cli(TOOL, "attendance_records", "--execute", env=_env(db_url, tmp_path)
                   ).returncode == 0
    before = snapshot(db)
    exports = tmp_path / "exports"
    listing = sorted(p.relative_to(exports) for p in exports.rglob("*"))
    fresh = tmp_path / "elsewhere"
    for args in ([], ["--full-refresh"], ["--output-dir", str(fresh)]):
        done = run_cli(TOOL, "attendance_records", "--json", *args, env=_env(db_url, tmp_path))
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer["dry_run"] is True and answer["stop_reason"].startswith("dry run")
        if args == ["--full-refresh"]:
            assert answer["counts"]["rows"] == 5
            assert any("would re-export 5 rows" in n for n in answer["notes"]), answer["notes"]
            assert any("--full-refresh: starts over" in n for n in answer["notes"])
        elif not args:
            assert answer["counts"]["rows"] == 0
    after = snapshot(db)
    assert before.differences(after) == [] and len(before.new_runs(after)) == 3
    assert sorted(p.relative_to(exports) for p in exports.rglob("*")) == listing
    assert not fresh.exists()


def test_the_dry_run_names_the_cursor_the_window_and_the_files(db, db_url, tmp_path):
    base = utcnow() - dt.timedelta(days=1)
    with db.begin() as conn:
        seed_students(conn, 5)
        conn.execute(insert(attendance_records), [record(i, base + i * SECOND)
                                                  for i in range(1, 6)])
    done = run_cli(TOOL, "attendance_records", "--partition-by", "day",
                   env=_env(db_url, tmp_path))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "(updated_at, id): every change sets updated_at" in out
    assert "the beginning" in out and "export_lag_seconds=0" in out
    assert "attendance_day=2026-09-02/part-00000.parquet" in out
    assert str(tmp_path / "exports" / "attendance_records") in out
    assert "files=5" in out and "rows=5" in out


# --- killed runs ---------------------------------------------------------------------------------


def _check_nothing_half_done_is_readable(folder: Path) -> list[dict]:
    """Every folder a reader's `batch=*` glob takes is complete: _SUCCESS, a manifest, its files
    as the manifest says; anything else is a temporary `.tmp-batch-*` folder."""
    if not folder.exists():
        return []
    for entry in folder.iterdir():
        assert entry.name.startswith((".tmp-batch-", "batch=")), entry
    for batch in folder.glob("batch=*"):
        assert (batch / "_SUCCESS").is_file(), batch
        manifest = json.loads((batch / "_manifest.json").read_text())
        files = {str(p.relative_to(batch)) for p in batch.rglob("*.parquet")}
        assert files == {f["path"] for f in manifest["files"]}
        for entry in manifest["files"]:
            assert hashlib.sha256((batch / entry["path"]).read_bytes()).hexdigest() == \
                entry["sha256"]
    return manifests(folder)


@pytest.mark.mariadb
@pytest.mark.slow
def test_runs_killed_at_random_moments_leave_nothing_half_done_and_the_next_completes(
        mariadb_url, tmp_path):
    db = connect(mariadb_url)
    base = utcnow() - dt.timedelta(days=3)
    with db.begin() as conn:
        seed_students(conn, 6000)
        conn.execute(insert(attendance_records), [
            record(i, base + i * SECOND, attendance_date=dt.date(2026, 1, 1)
                   + dt.timedelta(days=i % 150)) for i in range(1, 6001)])
    env = _env(mariadb_url, tmp_path)
    folder = table_folder(tmp_path)
    rng = random.Random(14)
    killed = 0
    for attempt in range(12):
        # Kill after a random number of files appeared under the table folder (temporary or
        # final), counted as the run writes them: no assumption about how fast it goes.
        kill_after = rng.randrange(0, 200)
        process = subprocess.Popen(
            [sys.executable, str(REPO / "tools" / f"{TOOL}.py"), "attendance_records",
             "--execute", "--partition-by", "day", "--full-refresh"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while process.poll() is None:
            seen = sum(len(dirs) + len(files) for _, dirs, files in os.walk(folder))
            if seen >= kill_after:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        process.wait()
        killed += process.returncode == -signal.SIGKILL
        _check_nothing_half_done_is_readable(folder)
    # One more kill at a moment the test holds: the batch is published, the watermark not yet
    # moved (the test holds the watermark row's lock).
    holder = create_engine(mariadb_url).connect()
    holder.begin()
    holder.execute(text("INSERT INTO ops_export_watermarks (table_name) VALUES "
                        "('attendance_records') ON DUPLICATE KEY UPDATE table_name = table_name"))
    published = len(manifests(folder))
    process = subprocess.Popen(
        [sys.executable, str(REPO / "tools" / f"{TOOL}.py"), "attendance_records", "--execute",
         "--full-refresh"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    while len(manifests(folder)) == published:
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    holder.rollback()
    holder.close()
    unconfirmed = manifests(folder)[-1]
    done = run_cli(TOOL, "attendance_records", "--execute", "--full-refresh", env=env)
    assert done.returncode == 0, done.stderr
    batches = _check_nothing_half_done_is_readable(folder)
    assert unconfirmed["run_id"] in batches[-1]["supersedes"]
    assert batches[-1]["watermark_from"] is None and batches[-1]["full_refresh"] is True
    assert not list(folder.glob(".tmp-batch-*"))  # the last run swept them
    source = source_rows(db)
    assert read_back(folder, latest=True) == [source[i] for i in sorted(source)]
    assert json.loads(watermark_row(db).watermark_key) == [6000]
    print(f"{killed} of 12 random runs killed before they ended")
    db.engine.dispose()


def test_a_stopped_run_publishes_a_prefix_of_the_window_and_the_next_run_goes_on(tmp_path):
    from tests.conftest import sqlite_database

    url = sqlite_database(tmp_path)
    db = connect(url)
    base = utcnow() - dt.timedelta(days=1)
    with db.begin() as conn:
        seed_students(conn, 25_000)
        # Many rows share each second: the next run must go on inside the second it stopped in.
        conn.execute(insert(attendance_records), [record(i, base + (i // 7) * SECOND)
                                                  for i in range(1, 25_001)])
    ctx = job_context(url, tmp_path, OPS_EXPORT_DIR=str(tmp_path / "exports"),
                      OPS_EXPORT_LAG_SECONDS="0")
    ctx.stop.set("SIGTERM")  # as if it came while the first chunk was being written
    stopped = job.run(ctx, "attendance_records")
    assert stopped.stop_reason == "interrupted by SIGTERM"
    assert stopped.counts["rows"] == 10_000
    assert any("15000 rows of the window left" in note for note in stopped.notes)
    mark = watermark_row(db)
    assert (mark.watermark_at, json.loads(mark.watermark_key)) == (base + 1428 * SECOND,
                                                                   [10_000])
    rest = export(url, tmp_path)
    assert rest.counts["rows"] == 15_000
    source = source_rows(db)
    assert [row[0] for row in read_back(table_folder(tmp_path))] == sorted(source)
    db.engine.dispose()


def test_a_database_without_the_watermark_table_is_told_how_to_upgrade(tmp_path):
    from tests.conftest import sqlite_database

    url = sqlite_database(tmp_path)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE ops_export_watermarks"))
    engine.dispose()
    done = run_cli(TOOL, "attendance_records", env=_env(url, tmp_path))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: table ops_export_watermarks is missing: this database predates the warehouse "
        "export; apply docs/upgrading.md's 'Warehouse export' statements")


@pytest.mark.mariadb
def test_pages_walk_a_composite_key_in_order_each_row_once_with_both_readers(mariadb_url):
    """attendance_rollups' cursor is (updated_at, institution_id, attendance_date, class_name);
    pages of 7 rows cut through rows sharing an updated_at: each row comes exactly once."""
    from ops_lib.jobs.warehouse_export.reader import last_row, stream_window, stream_window_arrow
    from ops_lib.jobs.warehouse_export.tables import EXPORTS
    from ops_lib.jobs.warehouse_export.window import Watermark, take_window
    from ops_lib.schema import attendance_rollups

    db = connect(mariadb_url)
    base = utcnow() - dt.timedelta(days=1)
    rows = [{"institution_id": 1 + i % 3, "attendance_date": dt.date(2026, 11, 1 + i % 5),
             "class_name": f"Class {chr(65 + i % 4)}'s", "present_count": i,
             "updated_at": base + (i // 6) * SECOND} for i in range(60)]
    unique = {(r["institution_id"], r["attendance_date"], r["class_name"]): r for r in rows}
    with db.begin() as conn:
        conn.execute(insert(attendance_rollups), list(unique.values()))
    export_ = EXPORTS["attendance_rollups"]
    expected = sorted((r["updated_at"], *key) for key, r in unique.items())
    with db.snapshot() as conn:
        window = take_window(conn, db.caps, Watermark(), 0)
        by_rows = [(r[-1], r[0], r[1], r[2]) for chunk in
                   stream_window(conn, export_, window, page_rows=7, chunk_rows=3) for r in chunk]
    assert by_rows == expected
    names = export_.columns
    by_arrow = []
    for batch in stream_window_arrow(db.url, db.engine.dialect, export_, window, page_rows=7,
                                     batch_rows=3):
        for i in range(len(batch)):
            row = dict(zip(names, last_row(batch.slice(0, i + 1))))
            by_arrow.append((row["updated_at"], row["institution_id"], row["attendance_date"],
                             row["class_name"]))
    assert by_arrow == expected
    db.engine.dispose()
