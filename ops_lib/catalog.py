"""What each tool uses, declared once: the settings it reads, and the database it touches.

A tool refuses to run (exit 2) over a bad value of a setting it uses; a bad value of a setting it
does not use is a warning, so one administrator's typo in a billing setting cannot stop the
background worker. tests/test_catalog_settings.py checks the settings against the code.

The tables each tool reads and writes, and the server privileges it needs beyond them, give
every role its grants (ops_lib/grants.py, tools/manage_db_users.py): a role's user can do what
its tools do and nothing else. tests/test_db_users_mariadb.py runs every tool under its role's
user, so a table the code touches and the declaration forgets is a failing test.
"""

from __future__ import annotations

from dataclasses import dataclass

# Every tool connects, logs, takes its run lock and may send a failure alert (by SMTP or to the
# outbox), so these are used by all of them.
EVERY_TOOL = frozenset({
    "database_url", "db_driver", "log_file", "log_format", "lock_dir", "outbox_dir",
    "alert_email", "alert_ping_url", "alert_timeout_seconds",
    "smtp_host", "smtp_port", "smtp_user", "smtp_password", "smtp_starttls", "smtp_from",
    "smtp_timeout_seconds",
})


# Table privileges: (privilege, table) pairs.
SELECT, INSERT, UPDATE, DELETE = "SELECT", "INSERT", "UPDATE", "DELETE"
TablePrivileges = frozenset[tuple[str, str]]

# Server privileges beyond tables, by what they are for (ops_lib/grants.py spells each one for
# MariaDB and MySQL).
TEMPORARY_TABLES = "temporary tables"  # CREATE TEMPORARY TABLES: set-based joins of a batch
PROCESS = "process"  # the export's oldest open transaction (information_schema.INNODB_TRX)
REPLICA_MONITOR = "replica monitor"  # replication lag: SHOW REPLICA STATUS
SCRATCH_SCHEMAS = "scratch schemas"  # ops_scratch_*: schema.sql loaded beside the live schema
WHOLE_SCHEMA_READ = "whole schema read"  # SELECT on every table, other applications' too
SCHEMA_DDL = "schema ddl"  # create, alter and drop the schema's tables
SERVER_PRIVILEGES = (TEMPORARY_TABLES, PROCESS, REPLICA_MONITOR, SCRATCH_SCHEMAS,
                     WHOLE_SCHEMA_READ, SCHEMA_DDL)


def tables(select: str = "", insert: str = "", update: str = "",
           delete: str = "") -> TablePrivileges:
    """Table privileges from space-separated table names per privilege. A table written by
    UPDATE or DELETE is read too (their WHERE reads it)."""
    pairs = set()
    for privilege, names in ((SELECT, select), (INSERT, insert), (UPDATE, update),
                             (DELETE, delete)):
        for name in names.split():
            pairs.add((privilege, name))
            if privilege in (UPDATE, DELETE):
                pairs.add((SELECT, name))
    return frozenset(pairs)


# Every tool reads the settings table and writes its own run-ledger row.
EVERY_TOOL_TABLES = tables(select="system_settings", insert="ops_job_runs",
                           update="ops_job_runs")


@dataclass(frozen=True)
class ToolUse:
    """The settings one tool reads, beyond those every tool reads; its role; the tables it reads
    and writes beyond the settings and the run ledger; the server privileges it needs."""

    settings: frozenset[str] = frozenset()
    role: str = ""
    tables: TablePrivileges = frozenset()
    server: frozenset[str] = frozenset()

    def all_settings(self) -> frozenset[str]:
        return EVERY_TOOL | self.settings

    def all_tables(self) -> TablePrivileges:
        return EVERY_TOOL_TABLES | self.tables

    def reads(self) -> frozenset[str]:
        return frozenset(table for privilege, table in self.all_tables() if privilege == SELECT)


@dataclass(frozen=True)
class Role:
    """A database role: what its user is for. Its grants are its tools' (ops_lib/grants.py)."""

    description: str
    # The scheduler service runs other tools as its child processes, with its own login: it
    # holds the grants of every tool the schedule runs.
    runs_the_schedule: bool = False
    # The monitor reads every table (but MONITOR_NEVER_READS): any tool's dry run works under it.
    reads_every_dry_run: bool = False
    # The server's administrator (root, or an account WITH GRANT OPTION): not created here.
    created: bool = True


ROLES: dict[str, Role] = {
    "monitor": Role("health checks and dry runs: reads, and writes its own run-ledger rows only",
                    reads_every_dry_run=True),
    "worker": Role("the background worker: the queues, attendance, notifications, pushes"),
    "billing": Role("the billing sweep: invoices, reminders, access states"),
    "archiver": Role("the archive: moves old rows to the *_archive tables"),
    "device_cleanup": Role("deactivates stale notification device tokens"),
    "schema_inspector": Role("drift check and index preview: reads the schema, loads schema.sql "
                             "into its own scratch schemas"),
    "exporter": Role("the warehouse export: reads the exported tables, keeps its watermark"),
    "location_importer": Role("refreshes divisions, districts, upazilas and unions"),
    "scheduler": Role("the scheduler service and the schedule's files: every scheduled job "
                      "runs as its child process with this login", runs_the_schedule=True),
    "schema_admin": Role("support tools: creates and resets the schema, demo data, dead "
                         "letters; the only role with DDL"),
    "administrator": Role("the server's administrator (root, or an account with CREATE USER "
                          "and GRANT OPTION): creates the other roles' users", created=False),
}

# The web app's credentials and one-time codes (hashes, still secrets): the monitor, which reads
# every other table, never reads these (whether or not this schema has them yet).
MONITOR_NEVER_READS = frozenset({"users", "password_reset_codes", "pending_registrations",
                                 "user_sessions"})

# The tables whose rows the warehouse export reads (the hot table and the archive's).
EXPORTED_TABLES = "attendance_records attendance_rollups audit_logs audit_logs_archive"


LOCATION_TABLES = "divisions districts upazilas unions"
QUEUE_TABLES = ("attendance_scan_queue push_deliveries report_email_queue attendance_rollup_queue "
                "guardian_snapshot_queue")
# The DB jobs (issue 16): the web app's jobs, their runs, and what the built-in handlers read.
DB_JOB_TABLES = ("users cron_jobs cron_job_runs password_reset_codes pending_registrations "
                 "user_sessions")
# What running the DB jobs takes: the worker's stage, and manage_db_jobs run --execute.
DB_JOB_PRIVILEGES = tables(select=DB_JOB_TABLES, insert="cron_job_runs",
                           update="cron_jobs pending_registrations",
                           delete="cron_jobs password_reset_codes user_sessions")
# The archive's areas, hot and archived: queue health draws the archive's readiness table.
ARCHIVE_TABLES = ("notifications notifications_archive audit_logs audit_logs_archive payments "
                  "payments_archive invoices attendance_records")

TOOLS: dict[str, ToolUse] = {
    "archive_hot_path_data": ToolUse(
        settings=frozenset({
            "notifications_retention_days", "audit_logs_retention_days",
            "payments_retention_days", "attendance_retention_days", "replica_database_url"}),
        role="archiver",
        tables=tables(select="invoices notifications_archive audit_logs_archive payments_archive",
                      insert="notifications_archive audit_logs_archive payments_archive",
                      update="attendance_records", delete="notifications audit_logs payments"),
        server=frozenset({REPLICA_MONITOR})),  # --max-replica-lag on the server's own status
    "check_schema_drift": ToolUse(
        role="schema_inspector", server=frozenset({WHOLE_SCHEMA_READ, SCRATCH_SCHEMAS})),
    "cleanup_stale_devices": ToolUse(
        settings=frozenset({"stale_device_days"}), role="device_cleanup",
        tables=tables(update="notification_devices")),
    "export_operational_warehouse_batch": ToolUse(
        settings=frozenset({"export_dir", "export_lag_seconds", "export_reader"}),
        role="exporter",
        tables=tables(select=EXPORTED_TABLES, insert="ops_export_watermarks",
                      update="ops_export_watermarks"),
        server=frozenset({PROCESS})),
    # The demo history is placed by the settings the other tools judge it by.
    "generate_synthetic_load": ToolUse(
        settings=frozenset({
            "notifications_retention_days", "audit_logs_retention_days",
            "payments_retention_days", "attendance_retention_days",
            "dead_letter_retention_days", "invoice_due_days", "billing_grace_days",
            "reminder_offsets_days", "billing_currency", "worker_max_attempts"}),
        role="schema_admin", server=frozenset({SCHEMA_DDL})),
    "generate_missing_index_sql": ToolUse(
        role="schema_inspector", server=frozenset({WHOLE_SCHEMA_READ, SCRATCH_SCHEMAS})),
    "import_ipemis_locations": ToolUse(
        settings=frozenset({"location_max_shrink_percent"}), role="location_importer",
        tables=tables(insert=LOCATION_TABLES, update=LOCATION_TABLES),
        server=frozenset({TEMPORARY_TABLES})),
    "manage_db_users": ToolUse(role="administrator"),
    "manage_dead_letters": ToolUse(
        settings=frozenset({"dead_letter_retention_days"}), role="schema_admin",
        server=frozenset({SCHEMA_DDL})),
    # run --execute runs a job through the worker's code path (its failure bookkeeping too):
    # the worker's DB-jobs grants.
    "manage_db_jobs": ToolUse(
        settings=frozenset({
            "worker_max_attempts", "worker_backoff_seconds", "worker_backoff_cap_seconds"}),
        role="worker", tables=DB_JOB_PRIVILEGES),
    "manage_schema": ToolUse(role="schema_admin", server=frozenset({SCHEMA_DDL})),
    # install-crontab enables the optional jobs this host runs.
    "manage_schedule": ToolUse(settings=frozenset({"optional_jobs"}), role="scheduler"),
    # The thresholds, the schedule's optional jobs, and for --html the archive's retentions (its
    # readiness table comes from the archive job's own plan).
    "queue_health_summary": ToolUse(
        settings=frozenset({
            "health_queue_depth_warning", "health_queue_depth_critical",
            "health_queue_latency_warning_seconds", "health_queue_latency_critical_seconds",
            "health_grace_seconds", "optional_jobs",
            "notifications_retention_days", "audit_logs_retention_days",
            "payments_retention_days", "attendance_retention_days"}),
        role="monitor",
        tables=tables(select=f"{QUEUE_TABLES} {ARCHIVE_TABLES}")),
    "run_background_workers": ToolUse(
        settings=frozenset({
            "worker_lease_seconds", "worker_max_attempts", "worker_backoff_seconds",
            "worker_backoff_cap_seconds", "worker_threads", "scan_late_after", "push_batch_size",
            "firebase_credentials", "firebase_project_id", "fcm_endpoint"}),
        role="worker",
        tables=tables(
            select="institutions students guardian_students notification_devices",
            insert="attendance_records attendance_rollups attendance_rollup_queue "
                   "guardian_snapshots guardian_snapshot_queue notifications push_deliveries",
            update="attendance_scan_queue attendance_records attendance_rollup_queue "
                   "guardian_snapshot_queue guardian_snapshots notifications push_deliveries "
                   "report_email_queue",
            delete="attendance_rollups attendance_rollup_queue guardian_snapshot_queue")
        | DB_JOB_PRIVILEGES,
        server=frozenset({TEMPORARY_TABLES})),
    # The schedule's optional jobs decide which jobs the service runs.
    "run_scheduler": ToolUse(settings=frozenset({"optional_jobs"}), role="scheduler"),
    "run_billing_jobs": ToolUse(
        settings=frozenset({
            "invoice_due_days", "billing_grace_days", "reminder_offsets_days",
            "billing_currency", "billing_batch_size"}),
        role="billing",
        tables=tables(select="plans guardian_students payments notifications audit_logs",
                      insert="invoices invoice_reminders notifications audit_logs",
                      update="institutions students invoices invoice_reminders")),
    "shadow_reporting_validation": ToolUse(
        settings=frozenset({"validation_target_url", "replica_database_url"}), role="monitor",
        tables=tables(select="attendance_records attendance_rollups invoices"),
        server=frozenset({REPLICA_MONITOR})),
}


def settings_used(tool: str) -> frozenset[str] | None:
    """The settings `tool` uses; None (all of them: the strict rule) for a tool not declared."""
    use = TOOLS.get(tool)
    return None if use is None else use.all_settings()
