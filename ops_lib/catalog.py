"""What each tool uses, declared once: the settings it reads.

A tool refuses to run (exit 2) over a bad value of a setting it uses; a bad value of a setting it
does not use is a warning, so one administrator's typo in a billing setting cannot stop the
background worker. A later field (the tables each tool touches) belongs in `ToolUse` beside
`settings`. tests/test_catalog_settings.py checks the declaration against the code.
"""

from __future__ import annotations

from dataclasses import dataclass

# Every tool connects, logs, takes its run lock and may send a failure alert (by SMTP or to the
# outbox), so these are used by all of them.
EVERY_TOOL = frozenset({
    "database_url", "log_file", "log_format", "lock_dir", "outbox_dir",
    "alert_email", "alert_ping_url", "alert_timeout_seconds",
    "smtp_host", "smtp_port", "smtp_user", "smtp_password", "smtp_starttls", "smtp_from",
    "smtp_timeout_seconds",
})


@dataclass(frozen=True)
class ToolUse:
    """The settings one tool reads, beyond those every tool reads."""

    settings: frozenset[str] = frozenset()

    def all_settings(self) -> frozenset[str]:
        return EVERY_TOOL | self.settings


TOOLS: dict[str, ToolUse] = {
    "archive_hot_path_data": ToolUse(settings=frozenset({
        "notifications_retention_days", "audit_logs_retention_days", "payments_retention_days",
        "attendance_retention_days", "replica_database_url"})),
    "check_schema_drift": ToolUse(),
    "cleanup_stale_devices": ToolUse(settings=frozenset({"stale_device_days"})),
    "export_operational_warehouse_batch": ToolUse(settings=frozenset({
        "export_dir", "export_lag_seconds", "export_reader"})),
    # The demo history is placed by the settings the other tools judge it by.
    "generate_synthetic_load": ToolUse(settings=frozenset({
        "notifications_retention_days", "audit_logs_retention_days", "payments_retention_days",
        "attendance_retention_days", "dead_letter_retention_days", "invoice_due_days",
        "billing_grace_days", "reminder_offsets_days", "billing_currency",
        "worker_max_attempts"})),
    "generate_missing_index_sql": ToolUse(),
    "import_ipemis_locations": ToolUse(settings=frozenset({"location_max_shrink_percent"})),
    "manage_dead_letters": ToolUse(settings=frozenset({"dead_letter_retention_days"})),
    # run --execute runs a job through the worker's code path: its failure bookkeeping too.
    "manage_db_jobs": ToolUse(settings=frozenset({
        "worker_max_attempts", "worker_backoff_seconds", "worker_backoff_cap_seconds"})),
    "manage_schema": ToolUse(),
    # install-crontab enables the optional jobs this host runs.
    "manage_schedule": ToolUse(settings=frozenset({"optional_jobs"})),
    # The thresholds, the schedule's optional jobs, and for --html the archive's retentions (its
    # readiness table comes from the archive job's own plan).
    "queue_health_summary": ToolUse(settings=frozenset({
        "health_queue_depth_warning", "health_queue_depth_critical",
        "health_queue_latency_warning_seconds", "health_queue_latency_critical_seconds",
        "health_grace_seconds", "optional_jobs",
        "notifications_retention_days", "audit_logs_retention_days", "payments_retention_days",
        "attendance_retention_days"})),
    "run_background_workers": ToolUse(settings=frozenset({
        "worker_lease_seconds", "worker_max_attempts", "worker_backoff_seconds",
        "worker_backoff_cap_seconds", "scan_late_after", "push_batch_size",
        "firebase_credentials", "firebase_project_id", "fcm_endpoint"})),
    # The schedule's optional jobs decide which jobs the service runs.
    "run_scheduler": ToolUse(settings=frozenset({"optional_jobs"})),
    "run_billing_jobs": ToolUse(settings=frozenset({
        "invoice_due_days", "billing_grace_days", "reminder_offsets_days", "billing_currency",
        "billing_batch_size"})),
    "shadow_reporting_validation": ToolUse(settings=frozenset({
        "validation_target_url", "replica_database_url"})),
}


def settings_used(tool: str) -> frozenset[str] | None:
    """The settings `tool` uses; None (all of them: the strict rule) for a tool not declared."""
    use = TOOLS.get(tool)
    return None if use is None else use.all_settings()
