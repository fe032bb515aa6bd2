"""SQLAlchemy Core metadata for the platform's tables.

`schema.sql` is the source of truth for MySQL/MariaDB; this metadata mirrors it so that SQLite gets
the same schema and the jobs can build statements. `tests/test_schema.py` proves the two agree.

Columns beyond SPEC.md's fixed ones are the toolkit's own (claim columns, markers) and are all
nullable or defaulted, so a writer naming only the fixed columns can insert a row.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)

from . import schema_base
from .schema_base import MYSQL_TABLE_OPTIONS, Id, _created_at, _flag, _id, _table, metadata

# Defined in schema_base (read at every tool's start-up); here too, with every other table.
system_settings = schema_base.system_settings
ops_job_runs = schema_base.ops_job_runs


def _claim_columns() -> list[Column]:
    """Columns of a claimable queue row: who holds it, until when, and when it may be retried."""
    return [
        Column("claimed_by", String(32), nullable=True),
        Column("lease_expires_at", DateTime, nullable=True),
        Column("available_at", DateTime, nullable=True),
    ]


def _lease_index(name: str) -> Index:
    """A claimable queue's lease index: `lease_expires_at` alone, not behind the status. Only a
    claimed row has a lease, so recovery and queue health's claimed/expired counts read a range
    of the few leased rows (their status checked on the row), and a status change of a row that
    holds no lease (a locked batch's write-back: every scan) moves no entry of it."""
    return Index(name, "lease_expires_at")


plans = _table(
    "plans",
    _id(),
    Column("name", String(100), nullable=False),
    Column("monthly_fee_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False, server_default="BDT"),
    _created_at(),
)

institutions = _table(
    "institutions",
    _id(),
    Column("name", String(200), nullable=False),
    Column("code", String(50), nullable=False),
    Column("timezone", String(64), nullable=False, server_default="Asia/Dhaka"),
    Column("access_state", String(16), nullable=False, server_default="active"),
    Column("plan_id", Id, ForeignKey("plans.id", name="fk_institutions_plan"), nullable=True),
    Column("billing_email", String(255), nullable=True),
    _created_at(),
    _flag("is_active", True),
    _flag("billing_exempt", False),
    # Local time of day ("HH:MM") after which a first scan counts as late; null = the setting.
    Column("late_after", String(5), nullable=True),
    UniqueConstraint("code", name="uq_institutions_code"),
)

students = _table(
    "students",
    _id(),
    Column(
        "institution_id",
        Id,
        ForeignKey("institutions.id", name="fk_students_institution"),
        nullable=False,
    ),
    Column("name", String(200), nullable=False),
    Column("class_name", String(50), nullable=False, server_default=""),
    Column("card_uid", String(64), nullable=True),
    Column("monthly_fee_minor", BigInteger, nullable=True),
    Column("access_state", String(16), nullable=False, server_default="active"),
    _flag("is_active", True),
    _created_at(),
    UniqueConstraint("institution_id", "card_uid", name="uq_students_card"),
    Index("ix_students_roster", "institution_id", "is_active", "class_name"),
)

guardians = _table(
    "guardians",
    _id(),
    Column("name", String(200), nullable=False),
    Column("phone", String(32), nullable=True),
    Column("email", String(255), nullable=True),
    _created_at(),
)

guardian_students = _table(
    "guardian_students",
    Column(
        "guardian_id", Id, ForeignKey("guardians.id", name="fk_gs_guardian"), nullable=False
    ),
    Column("student_id", Id, ForeignKey("students.id", name="fk_gs_student"), nullable=False),
    PrimaryKeyConstraint("guardian_id", "student_id", name="pk_guardian_students"),
    Index("ix_gs_student", "student_id"),
)

notification_devices = _table(
    "notification_devices",
    _id(),
    Column(
        "guardian_id", Id, ForeignKey("guardians.id", name="fk_devices_guardian"), nullable=False
    ),
    Column("token", String(255), nullable=False),
    Column("platform", String(16), nullable=False, server_default="android"),
    _flag("is_active", True),
    Column("last_seen_at", DateTime, nullable=True),
    _created_at(),
    Column("deactivated_at", DateTime, nullable=True),
    Column("deactivation_reason", String(255), nullable=True),
    UniqueConstraint("token", name="uq_devices_token"),
    Index("ix_devices_guardian", "guardian_id", "is_active"),
    Index("ix_devices_staleness", "is_active", "last_seen_at"),
)

attendance_scan_queue = _table(
    "attendance_scan_queue",
    _id(),
    Column("institution_id", Id, nullable=False),
    Column("card_uid", String(64), nullable=False),
    Column("device_serial", String(64), nullable=True),
    Column("scanned_at", DateTime, nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    _created_at(),
    Column("processed_at", DateTime, nullable=True),
    Column("error", String(500), nullable=True),
    *_claim_columns(),
    # "institution|card|time" of a processed scan (NULL for duplicates and failures): unique, so
    # two workers can never both count copies of one scan.
    Column("scan_key", String(120), nullable=True),
    UniqueConstraint("scan_key", name="uq_scan_queue_scan_key"),
    Index("ix_scan_queue_poll", "status", "id"),
    _lease_index("ix_scan_queue_lease"),
    # Queue health: due rows by when they became available, and rows finished per time.
    Index("ix_scan_queue_due", "status", "available_at", "created_at"),
    Index("ix_scan_queue_finished", "status", "processed_at"),
)

attendance_records = _table(
    "attendance_records",
    _id(),
    Column("institution_id", Id, nullable=False),
    Column(
        "student_id", Id, ForeignKey("students.id", name="fk_records_student"), nullable=False
    ),
    Column("attendance_date", Date, nullable=False),
    Column("first_scan_at", DateTime, nullable=False),
    Column("last_scan_at", DateTime, nullable=False),
    Column("scan_count", Integer, nullable=False, server_default="1"),
    Column("status", String(16), nullable=False, server_default="present"),
    _flag("is_archived", False),
    _created_at(),
    Column("updated_at", DateTime, nullable=False, server_default=func.current_timestamp()),
    UniqueConstraint("student_id", "attendance_date", name="uq_records_student_day"),
    Index("ix_records_institution_day", "institution_id", "attendance_date"),
    Index("ix_records_archive", "is_archived", "attendance_date"),
    # The warehouse export's keyset walk, (updated_at, id) > watermark, in that order.
    Index("ix_records_updated", "updated_at", "id"),
)

notifications = _table(
    "notifications",
    _id(),
    Column("guardian_id", Id, nullable=False),
    Column("student_id", Id, nullable=True),
    Column("kind", String(32), nullable=False),
    Column("title", String(255), nullable=False),
    Column("body", Text, nullable=True),
    Column("data", JSON, nullable=True),
    Column("dedupe_key", String(191), nullable=False),
    _created_at(),
    Column("read_at", DateTime, nullable=True),
    # Fan-out to push_deliveries: 'pending' until every active device has its delivery row.
    Column("fanout_status", String(16), nullable=False, server_default="pending"),
    Column("fanned_out_at", DateTime, nullable=True),
    *_claim_columns(),
    UniqueConstraint("dedupe_key", name="uq_notifications_dedupe"),
    Index("ix_notifications_fanout", "fanout_status", "id"),
    Index("ix_notifications_fanout_due", "fanout_status", "available_at", "created_at"),
    Index("ix_notifications_fanned_out", "fanout_status", "fanned_out_at"),
    Index("ix_notifications_guardian", "guardian_id", "read_at"),
    Index("ix_notifications_created", "created_at"),
)

push_deliveries = _table(
    "push_deliveries",
    _id(),
    # No foreign key to notifications: old notifications move to notifications_archive.
    Column("notification_id", Id, nullable=False),
    Column(
        "device_id",
        Id,
        ForeignKey("notification_devices.id", name="fk_deliveries_device"),
        nullable=False,
    ),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("error_code", String(64), nullable=True),
    Column("sent_at", DateTime, nullable=True),
    Column("provider_message_id", String(255), nullable=True),
    Column("error", String(500), nullable=True),
    _created_at(),
    Column("finished_at", DateTime, nullable=True),  # sent, cancelled or dead-lettered
    *_claim_columns(),
    UniqueConstraint("notification_id", "device_id", name="uq_deliveries_notification_device"),
    Index("ix_deliveries_poll", "status", "id"),
    _lease_index("ix_deliveries_lease"),
    Index("ix_deliveries_due", "status", "available_at", "created_at"),
    Index("ix_deliveries_finished", "status", "finished_at"),
)

attendance_rollups = _table(
    "attendance_rollups",
    Column("institution_id", Id, nullable=False),
    Column("attendance_date", Date, nullable=False),
    Column("class_name", String(50), nullable=False),
    Column("present_count", Integer, nullable=False, server_default=text("0")),
    Column("late_count", Integer, nullable=False, server_default=text("0")),
    Column("absent_count", Integer, nullable=False, server_default=text("0")),
    Column("enrolled_count", Integer, nullable=False, server_default=text("0")),
    Column("updated_at", DateTime, nullable=False, server_default=func.current_timestamp()),
    PrimaryKeyConstraint(
        "institution_id", "attendance_date", "class_name", name="pk_attendance_rollups"
    ),
    # The warehouse export's keyset walk by updated_at (InnoDB appends the primary key).
    Index("ix_rollups_updated", "updated_at"),
)

# (institution, date) pairs whose roll-up is stale: marked by the scan stage, drained by roll-ups.
attendance_rollup_queue = _table(
    "attendance_rollup_queue",
    Column("institution_id", Id, nullable=False),
    Column("attendance_date", Date, nullable=False),
    Column("marked_at", DateTime, nullable=False, server_default=func.current_timestamp()),
    *_claim_columns(),
    PrimaryKeyConstraint("institution_id", "attendance_date", name="pk_attendance_rollup_queue"),
    Index("ix_rollup_queue_due", "available_at", "marked_at"),
    _lease_index("ix_rollup_queue_lease"),
)

guardian_snapshots = _table(
    "guardian_snapshots",
    Column("guardian_id", Id, nullable=False, autoincrement=False),
    Column("payload", JSON, nullable=False),
    Column("generated_at", DateTime, nullable=False),
    PrimaryKeyConstraint("guardian_id", name="pk_guardian_snapshots"),
)

# Guardians whose snapshot is stale: marked by the scan and fan-out stages, drained by snapshots.
guardian_snapshot_queue = _table(
    "guardian_snapshot_queue",
    Column("guardian_id", Id, nullable=False, autoincrement=False),
    Column("marked_at", DateTime, nullable=False, server_default=func.current_timestamp()),
    *_claim_columns(),
    PrimaryKeyConstraint("guardian_id", name="pk_guardian_snapshot_queue"),
    Index("ix_snapshot_queue_due", "available_at", "marked_at"),
    _lease_index("ix_snapshot_queue_lease"),
)

report_email_queue = _table(
    "report_email_queue",
    _id(),
    Column("institution_id", Id, nullable=False),
    Column("recipient", String(255), nullable=False),
    Column("report_type", String(64), nullable=False),
    Column("params", JSON, nullable=True),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    _created_at(),
    Column("sent_at", DateTime, nullable=True),
    Column("error", String(500), nullable=True),
    Column("finished_at", DateTime, nullable=True),  # sent or dead-lettered
    *_claim_columns(),
    Index("ix_report_email_poll", "status", "id"),
    _lease_index("ix_report_email_lease"),
    Index("ix_report_email_due", "status", "available_at", "created_at"),
    Index("ix_report_email_finished", "status", "finished_at"),
)

invoices = _table(
    "invoices",
    _id(),
    Column("invoice_no", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column(
        "institution_id",
        Id,
        ForeignKey("institutions.id", name="fk_invoices_institution"),
        nullable=False,
    ),
    Column("student_id", Id, nullable=True),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False, server_default="BDT"),
    Column("status", String(16), nullable=False, server_default="generated"),
    Column("issued_at", DateTime, nullable=True),
    Column("due_date", Date, nullable=True),
    Column("paid_at", DateTime, nullable=True),
    # "kind:subject:period" while the invoice is live, NULL once void: the database, not Python,
    # makes a second live invoice for the same subject and period impossible.
    Column("issue_key", String(100), nullable=True),
    _created_at(),
    Column("updated_at", DateTime, nullable=True),
    # The billing sweep's run (ops_job_runs.run_id) that issued it: audit rows for exactly its own.
    Column("issued_by_run", String(32), nullable=True),
    UniqueConstraint("invoice_no", name="uq_invoices_no"),
    UniqueConstraint("issue_key", name="uq_invoices_issue_key"),
    Index("ix_invoices_status_due", "status", "due_date"),
    Index("ix_invoices_institution", "institution_id", "kind", "status"),
    Index("ix_invoices_student", "student_id", "status"),
)

# One row per (invoice, reminder step), written before the reminder is sent: at most once.
invoice_reminders = _table(
    "invoice_reminders",
    Column("invoice_id", Id, nullable=False),
    Column("step", String(16), nullable=False),
    _created_at(),
    Column("sent_at", DateTime, nullable=True),
    Column("channel", String(32), nullable=True),
    # The run that recorded the step: only that run sends it (at most once, even if two run).
    Column("run_id", String(32), nullable=True),
    PrimaryKeyConstraint("invoice_id", "step", name="pk_invoice_reminders"),
    Index("ix_invoice_reminders_run", "run_id", "invoice_id"),
)

payments = _table(
    "payments",
    _id(),
    Column(
        "invoice_id", Id, ForeignKey("invoices.id", name="fk_payments_invoice"), nullable=False
    ),
    Column("amount_minor", BigInteger, nullable=False),
    Column("method", String(32), nullable=True),
    Column("reference", String(100), nullable=True),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("paid_at", DateTime, nullable=True),
    _created_at(),
    Index("ix_payments_invoice", "invoice_id", "status"),
    Index("ix_payments_created", "created_at"),
)

audit_logs = _table(
    "audit_logs",
    _id(),
    Column("actor", String(100), nullable=False),
    Column("action", String(64), nullable=False),
    Column("entity_type", String(64), nullable=False),
    Column("entity_id", String(64), nullable=True),
    Column("details", JSON, nullable=True),
    _created_at(),
    Index("ix_audit_logs_created", "created_at"),
    Index("ix_audit_logs_entity", "entity_type", "entity_id"),
)


def _archive_of(hot: Table) -> Table:
    """The archive twin of a hot table: same columns, plain (copied) ids, plus archived_at."""
    columns = [
        Column(
            c.name,
            c.type,
            nullable=c.nullable,
            server_default=c.server_default.arg if c.server_default is not None else None,
            primary_key=c.primary_key,
            autoincrement=False,
        )
        for c in hot.columns
    ]
    return _table(
        f"{hot.name}_archive",
        *columns,
        Column("archived_at", DateTime, nullable=False, server_default=func.current_timestamp()),
        Index(f"ix_{hot.name}_archive_created", "created_at"),
    )


notifications_archive = _archive_of(notifications)
audit_logs_archive = _archive_of(audit_logs)
payments_archive = _archive_of(payments)


def _location_table(name: str, parent: str | None) -> Table:
    parent_columns = []
    if parent:
        parent_columns = [
            Column(
                f"{parent[:-1]}_id",
                Id,
                ForeignKey(f"{parent}.id", name=f"fk_{name}_{parent[:-1]}"),
                nullable=False,
            ),
            Index(f"ix_{name}_{parent[:-1]}", f"{parent[:-1]}_id"),
        ]
    return _table(
        name,
        _id(),
        Column("code", String(20), nullable=False),
        *parent_columns,
        Column("name_en", String(150), nullable=False),
        Column("name_bn", String(150), nullable=True),
        _flag("is_active", True),
        Column("updated_at", DateTime, nullable=False, server_default=func.current_timestamp()),
        UniqueConstraint("code", name=f"uq_{name}_code"),
    )


divisions = _location_table("divisions", None)
districts = _location_table("districts", "divisions")
upazilas = _location_table("upazilas", "districts")
unions = _location_table("unions", "upazilas")

# The web app's users and what it keeps about signing in; the toolkit only expires and purges
# (ops_lib/jobs/db_jobs/handlers.py), each by the index its statement walks.
users = _table(
    "users",
    _id(),
    Column("name", String(200), nullable=False),
    Column("mobile", String(32), nullable=False),
    Column("role", String(32), nullable=False),
    _flag("is_active", True),
    _created_at(),
    UniqueConstraint("mobile", name="uq_users_mobile"),
)

password_reset_codes = _table(
    "password_reset_codes",
    _id(),
    Column("user_id", Id, nullable=False),
    Column("code_hash", String(255), nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("used_at", DateTime, nullable=True),
    _created_at(),
    Index("ix_password_reset_codes_expires", "expires_at"),
    Index("ix_password_reset_codes_user", "user_id", "expires_at"),
)

pending_registrations = _table(
    "pending_registrations",
    _id(),
    Column("mobile", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("otp_hash", String(255), nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    _created_at(),
    Index("ix_pending_registrations_expiry", "status", "expires_at"),
    Index("ix_pending_registrations_mobile", "mobile"),
)

user_sessions = _table(
    "user_sessions",
    _id(),
    Column("user_id", Id, nullable=False),
    Column("token_hash", String(255), nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("revoked_at", DateTime, nullable=True),
    _created_at(),
    UniqueConstraint("token_hash", name="uq_user_sessions_token"),
    Index("ix_user_sessions_expires", "expires_at"),
    Index("ix_user_sessions_user", "user_id", "expires_at"),
)

# Jobs the web app defines, run by the background worker's dbjobs stage (docs/db-jobs.md).
# created_at (the anchor of a recurring job without run_at), invalid_reason, attempts, retry_at
# and last_error are the toolkit's. user_id has no foreign key: a row naming a user that does not
# exist is marked invalid by the stage, not refused by the server.
cron_jobs = Table(
    "cron_jobs",
    metadata,
    _id(),
    Column("name", String(200), nullable=False),
    Column("job_type", String(64), nullable=False),
    Column("user_id", Id, nullable=True),
    Column("run_at", DateTime, nullable=True),
    Column("interval_minutes", Integer, nullable=True),
    _flag("is_active", True),
    Column("last_run_at", DateTime, nullable=True),  # the slot it last ran for, not a clock time
    _created_at(),
    Column("invalid_reason", String(255), nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("retry_at", DateTime, nullable=True),
    Column("last_error", String(500), nullable=True),
    Index("ix_cron_jobs_active", "is_active", "id"),
    # A deleted one-off job's id must never come back: its cron_job_runs rows name it. InnoDB's
    # counter never goes back (persisted since MySQL 8 / MariaDB 10.2.4); SQLite needs this.
    sqlite_autoincrement=True,
    **MYSQL_TABLE_OPTIONS,
)

# One row per (job, slot): done, skipped (one row per gap: slot_at to last_slot_at) or failed (a
# dead letter). Inserted in the transaction of the handler's writes: the unique key is the claim.
cron_job_runs = _table(
    "cron_job_runs",
    _id(),
    Column("cron_job_id", Id, nullable=False),
    Column("job_type", String(64), nullable=False),
    Column("slot_at", DateTime, nullable=False),
    Column("last_slot_at", DateTime, nullable=True),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("rows_affected", Integer, nullable=False, server_default=text("0")),
    Column("run_id", String(32), nullable=True),
    Column("error", String(500), nullable=True),
    _created_at(),
    Column("finished_at", DateTime, nullable=True),
    UniqueConstraint("cron_job_id", "slot_at", name="uq_cron_job_runs_slot"),
    Index("ix_cron_job_runs_finished", "status", "finished_at"),
)

# The warehouse export's watermark per exported table: every row up to (watermark_at,
# watermark_key) is in a published batch (ops_lib/jobs/warehouse_export). Moved only after the
# batch's manifest and _SUCCESS are on disk; last_run_id names that batch.
ops_export_watermarks = _table(
    "ops_export_watermarks",
    Column("table_name", String(64), nullable=False),
    Column("watermark_at", DateTime, nullable=True),
    # The last exported row's key after its cursor time, as a JSON list ([id], or the columns
    # of a composite primary key); NULL before the first batch.
    Column("watermark_key", String(255), nullable=True),
    Column("last_run_id", String(32), nullable=True),
    Column("last_rows", BigInteger, nullable=True),
    Column("updated_at", DateTime, nullable=False, server_default=func.current_timestamp()),
    PrimaryKeyConstraint("table_name", name="pk_ops_export_watermarks"),
)
