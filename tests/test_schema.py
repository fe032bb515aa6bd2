"""schema.sql and the library's metadata (ops_lib/schema.py) describe the same schema.

schema.sql is loaded into one scratch MariaDB database, `metadata.create_all` builds another, and
both catalogs are read and compared the way check_schema_drift.py compares a live database with
schema.sql (ops_lib/schema_catalog.py, ops_lib/jobs/schema_drift.py): every table, column, type,
default, key, index and foreign key, and every table's engine and charset, must agree.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, create_engine, func, insert, select

from ops_lib import schema as s
from ops_lib.jobs.schema_admin import SCHEMA_SQL, create_schema
from ops_lib.jobs.schema_drift import compare
from ops_lib.schema import metadata
from ops_lib.schema_catalog import PRIMARY, Catalog, read_catalog
from tests.conftest import (MYSQL_SERVER_URL, MysqlScratch, require_mariadb,
                            run_mariadb_client, unique_name)

# One test process for the module: its module fixtures load schema.sql and the metadata into
# databases of their own, once per process.
pytestmark = [pytest.mark.mariadb, pytest.mark.xdist_group("schema_module")]


def catalog_of(engine: Engine) -> Catalog:
    with engine.connect() as conn:
        return read_catalog(conn)


def differences(expected: Catalog, actual: Catalog) -> list[str]:
    return [drift.line() for drift in compare(expected, actual)]


@pytest.fixture(scope="module")
def from_schema_sql():
    require_mariadb()
    scratch = MysqlScratch(unique_name("ops_schema_sql"))
    scratch.create()  # loads schema.sql, statement by statement
    engine = create_engine(scratch.url)
    yield engine
    engine.dispose()
    scratch.drop()


@pytest.fixture(scope="module")
def from_metadata():
    require_mariadb()
    name = unique_name("ops_schema_meta")
    server = create_engine(MYSQL_SERVER_URL)
    with server.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    engine = create_engine(f"{MYSQL_SERVER_URL.rstrip('/')}/{name}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()
    with server.begin() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
    server.dispose()


@pytest.fixture(scope="module")
def catalogs(from_schema_sql, from_metadata) -> tuple[Catalog, Catalog]:
    return catalog_of(from_schema_sql), catalog_of(from_metadata)


def test_schema_sql_and_metadata_have_the_same_tables(catalogs):
    sql, meta = catalogs
    assert sorted(sql.tables) == sorted(meta.tables) == sorted(metadata.tables)


def test_schema_sql_and_metadata_agree_on_every_table(catalogs):
    """Columns (type, nullability, default, ON UPDATE, auto_increment, collation), primary
    keys, unique and plain indexes (parts, order, prefixes), foreign keys (columns, target,
    rules), engine and charset: the drift check's comparison finds nothing."""
    sql, meta = catalogs
    assert differences(sql, meta) == []


def test_the_catalogs_compared_hold_every_column_index_and_key(catalogs):
    """The comparison above is not vacuous: both sides were read in full."""
    for catalog in catalogs:
        for table in metadata.tables.values():
            read = catalog.tables[table.name]
            assert list(read.columns) == [c.name for c in table.columns], table.name
            assert {i.name for i in table.indexes} <= set(read.indexes), table.name
            assert len(read.foreign_keys) == len(table.foreign_key_constraints), table.name


def test_schema_sql_column_types_are_the_expected_mysql_types(catalogs):
    sql, _ = catalogs
    types = {(t, c): column.type for t, table in sql.tables.items()
             for c, column in table.columns.items()}
    assert types[("institutions", "id")] == "bigint"
    assert types[("institutions", "is_active")] == "tinyint(1)"
    assert types[("attendance_scan_queue", "scanned_at")] == "datetime"
    assert types[("attendance_records", "attendance_date")] == "date"
    assert types[("invoices", "amount_minor")] == "bigint"
    assert types[("divisions", "name_bn")] == "varchar(150)"
    # Money is never a float or a decimal anywhere.
    assert not [k for k, v in types.items()
                if any(word in v for word in ("float", "double", "decimal", "real"))]


def test_every_table_is_innodb_utf8mb4(catalogs):
    sql, _ = catalogs
    for name, table in sql.tables.items():
        assert table.engine == "InnoDB", name
        assert table.charset == "utf8mb4", name


def test_every_table_has_a_primary_key(catalogs):
    sql, meta = catalogs
    assert [t for t, table in sql.tables.items() if PRIMARY not in table.indexes] == []
    assert [t for t, table in meta.tables.items() if PRIMARY not in table.indexes] == []
    assert [t.name for t in metadata.sorted_tables if not t.primary_key.columns] == []


def test_schema_sql_loads_twice_without_error(from_schema_sql):
    before = catalog_of(from_schema_sql)
    with from_schema_sql.begin() as conn:
        create_schema(conn, is_mysql=True)
    assert differences(before, catalog_of(from_schema_sql)) == []


def test_sqlite_schema_has_the_same_tables_and_columns_as_schema_sql(catalogs, tmp_path):
    sql, _ = catalogs
    engine = create_engine(f"sqlite:///{tmp_path / 'schema.db'}")
    metadata.create_all(engine)
    lite = catalog_of(engine)
    engine.dispose()
    assert sorted(lite.tables) == sorted(sql.tables)
    for name, table in sql.tables.items():
        ours = lite.tables[name]
        assert [(c.name, c.nullable) for c in ours.columns.values()] == \
            [(c.name, c.nullable) for c in table.columns.values()], name
        assert ours.indexes[PRIMARY].columns == table.indexes[PRIMARY].columns, name
        assert {i for i, index in ours.indexes.items() if not index.generated_name} <= \
            set(table.indexes), name
        assert sorted(key.definition() for key in ours.foreign_keys.values()) == \
            sorted(key.definition() for key in table.foreign_keys.values()), name


# SPEC.md's fixed columns, table by table: what the web app may name and nothing more.
NOW = dt.datetime(2026, 1, 5, 8, 30)
TODAY = NOW.date()
FIXED_ROWS = [
    (s.plans, {"id": 1, "name": "Basic", "monthly_fee_minor": 250000, "currency": "BDT"}),
    (s.institutions, {"id": 1, "name": "School", "code": "S-1", "timezone": "Asia/Dhaka",
                      "access_state": "active", "plan_id": 1, "billing_email": "b@x.example",
                      "created_at": NOW}),
    (s.students, {"id": 1, "institution_id": 1, "name": "Rafi", "class_name": "One",
                  "card_uid": "C-1", "monthly_fee_minor": None, "access_state": "active",
                  "is_active": True}),
    (s.guardians, {"id": 1, "name": "Guardian", "phone": "+880100", "email": "g@x.example"}),
    (s.guardian_students, {"guardian_id": 1, "student_id": 1}),
    (s.notification_devices, {"id": 1, "guardian_id": 1, "token": "tok-1", "platform": "ios",
                              "is_active": True, "last_seen_at": NOW, "created_at": NOW,
                              "deactivated_at": None, "deactivation_reason": None}),
    (s.attendance_scan_queue, {"id": 1, "institution_id": 1, "card_uid": "C-1",
                               "device_serial": "D-1", "scanned_at": NOW, "status": "pending",
                               "attempts": 0, "created_at": NOW, "processed_at": None,
                               "error": None}),
    (s.attendance_records, {"id": 1, "institution_id": 1, "student_id": 1,
                            "attendance_date": TODAY, "first_scan_at": NOW, "last_scan_at": NOW,
                            "scan_count": 1, "status": "present", "is_archived": False,
                            "created_at": NOW, "updated_at": NOW}),
    (s.notifications, {"id": 1, "guardian_id": 1, "student_id": 1, "kind": "attendance",
                       "title": "Arrived", "body": "Rafi arrived", "data": {"a": 1},
                       "dedupe_key": "scan:1", "created_at": NOW, "read_at": None}),
    (s.push_deliveries, {"id": 1, "notification_id": 1, "device_id": 1, "status": "pending",
                         "attempts": 0, "error_code": None, "sent_at": None}),
    (s.attendance_rollups, {"institution_id": 1, "attendance_date": TODAY, "class_name": "One",
                            "present_count": 1, "late_count": 0, "absent_count": 0,
                            "enrolled_count": 1, "updated_at": NOW}),
    (s.guardian_snapshots, {"guardian_id": 1, "payload": {"students": [1]},
                            "generated_at": NOW}),
    (s.report_email_queue, {"id": 1, "institution_id": 1, "recipient": "r@x.example",
                            "report_type": "daily", "params": {"day": "2026-01-05"},
                            "status": "pending", "attempts": 0, "created_at": NOW,
                            "sent_at": None, "error": None}),
    (s.invoices, {"id": 1, "invoice_no": "INV-1", "kind": "platform", "institution_id": 1,
                  "student_id": None, "period_start": TODAY, "period_end": TODAY,
                  "amount_minor": 250000, "currency": "BDT", "status": "generated",
                  "issued_at": NOW, "due_date": TODAY, "paid_at": None}),
    (s.payments, {"id": 1, "invoice_id": 1, "amount_minor": 250000, "method": "bkash",
                  "reference": "R-1", "status": "settled", "paid_at": NOW, "created_at": NOW}),
    (s.audit_logs, {"id": 1, "actor": "admin", "action": "update", "entity_type": "student",
                    "entity_id": "1", "details": {"field": "name"}, "created_at": NOW}),
    (s.divisions, {"id": 1, "code": "30", "name_en": "Dhaka", "name_bn": "ঢাকা",
                   "is_active": True, "updated_at": NOW}),
    (s.districts, {"id": 1, "code": "3026", "division_id": 1, "name_en": "Dhaka",
                   "name_bn": "ঢাকা", "is_active": True, "updated_at": NOW}),
    (s.upazilas, {"id": 1, "code": "302602", "district_id": 1, "name_en": "Dhamrai",
                  "name_bn": "ধামরাই", "is_active": True, "updated_at": NOW}),
    (s.unions, {"id": 1, "code": "30260201", "upazila_id": 1, "name_en": "Amtali",
                "name_bn": "আমতলী", "is_active": True, "updated_at": NOW}),
    (s.system_settings, {"name": "billing_grace_days", "value": "5", "updated_at": NOW}),
    (s.users, {"id": 1, "name": "Admin", "mobile": "01700000001", "role": "admin",
               "is_active": True, "created_at": NOW}),
    (s.cron_jobs, {"id": 1, "name": "Expire reset codes", "job_type": "noop", "user_id": 1,
                   "run_at": NOW, "interval_minutes": 60, "is_active": True,
                   "last_run_at": None}),
    (s.password_reset_codes, {"id": 1, "user_id": 1, "code_hash": "h", "expires_at": NOW,
                              "used_at": None, "created_at": NOW}),
    (s.pending_registrations, {"id": 1, "mobile": "01700000002", "name": "New", "otp_hash": "h",
                               "expires_at": NOW, "status": "pending", "created_at": NOW}),
    (s.user_sessions, {"id": 1, "user_id": 1, "token_hash": "t", "expires_at": NOW,
                       "revoked_at": None, "created_at": NOW}),
    (s.ops_job_runs, {"run_id": "r1", "tool": "web", "host": "h", "pid": 1, "args": "{}",
                      "dry_run": False, "started_at": NOW, "heartbeat_at": NOW,
                      "finished_at": NOW, "status": "ok", "counts": "{}", "error": None}),
]
for _hot, _archive in ((s.notifications, s.notifications_archive),
                       (s.audit_logs, s.audit_logs_archive), (s.payments, s.payments_archive)):
    FIXED_ROWS.append((_archive, {**dict(FIXED_ROWS)[_hot], "archived_at": NOW}))
# SPEC.md's data contract; the toolkit's own tables (queues of marks, reminders...) come on top.
SPEC_TABLES = {
    "institutions", "plans", "students", "guardians", "guardian_students",
    "notification_devices", "attendance_scan_queue", "attendance_records", "notifications",
    "push_deliveries", "attendance_rollups", "guardian_snapshots", "report_email_queue",
    "invoices", "payments", "audit_logs", "notifications_archive", "audit_logs_archive",
    "payments_archive", "divisions", "districts", "upazilas", "unions", "system_settings",
    "users", "cron_jobs", "password_reset_codes", "pending_registrations", "user_sessions",
    "ops_job_runs",
}


def test_fixed_rows_cover_every_table_of_the_spec():
    assert {table.name for table, _ in FIXED_ROWS} == SPEC_TABLES
    assert SPEC_TABLES <= set(metadata.tables)


def test_every_column_beyond_the_fixed_ones_is_nullable_or_defaulted():
    for table, row in FIXED_ROWS:
        extra = [c for c in table.columns if c.name not in row]
        bare = [c.name for c in extra
                if not c.nullable and c.server_default is None and c.autoincrement is not True]
        assert bare == [], table.name


def test_a_writer_naming_only_the_fixed_columns_can_insert_into_every_table(db):
    with db.begin() as conn:
        for table, row in FIXED_ROWS:
            conn.execute(insert(table).values(**row))
    with db.begin(write=False) as conn:
        for table, row in FIXED_ROWS:
            assert conn.execute(select(func.count()).select_from(table)).scalar_one() == 1
        scan = conn.execute(select(s.attendance_scan_queue)).mappings().one()
        institution = conn.execute(select(s.institutions)).mappings().one()
        delivery = conn.execute(select(s.push_deliveries)).mappings().one()
        report = conn.execute(select(s.report_email_queue)).mappings().one()
        notification = conn.execute(select(s.notifications)).mappings().one()
        job = conn.execute(select(s.cron_jobs)).mappings().one()
    # The toolkit's own columns took their defaults.
    assert job["created_at"] is not None and job["invalid_reason"] is None
    assert (job["attempts"], job["retry_at"], job["last_error"]) == (0, None, None)
    assert (scan["claimed_by"], scan["lease_expires_at"], scan["available_at"]) == (None,) * 3
    assert institution["is_active"] is True and institution["billing_exempt"] is False
    assert institution["late_after"] is None
    assert delivery["created_at"] is not None and delivery["provider_message_id"] is None
    assert report["claimed_by"] is None and report["params"] == {"day": "2026-01-05"}
    assert notification["fanout_status"] == "pending"


def test_a_writer_relying_on_spec_defaults_gets_them(db):
    with db.begin() as conn:
        conn.execute(insert(s.institutions).values(name="Defaults", code="D-1"))
        conn.execute(insert(s.attendance_scan_queue).values(
            institution_id=1, card_uid="C", scanned_at=NOW))
    with db.begin(write=False) as conn:
        institution = conn.execute(select(s.institutions)).mappings().one()
        scan = conn.execute(select(s.attendance_scan_queue)).mappings().one()
    assert institution["timezone"] == "Asia/Dhaka" and institution["access_state"] == "active"
    assert institution["created_at"] is not None
    assert scan["status"] == "pending" and scan["attempts"] == 0


def test_schema_sql_loads_with_the_mysql_client_as_its_header_says(from_schema_sql):
    """`mysql --default-character-set=utf8mb4 DB < schema.sql` gives the same schema."""
    scratch = MysqlScratch(unique_name("ops_schema_client"))
    with create_engine(MYSQL_SERVER_URL).begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{scratch.name}` CHARACTER SET utf8mb4 "
                             "COLLATE utf8mb4_unicode_ci")
    try:
        loaded = run_mariadb_client(scratch.url, SCHEMA_SQL.read_bytes())
        assert loaded.returncode == 0, loaded.stderr.decode()
        engine = create_engine(scratch.url)
        assert differences(catalog_of(from_schema_sql), catalog_of(engine)) == []
        engine.dispose()
    finally:
        scratch.drop()
