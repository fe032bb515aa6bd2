"""Generate synthetic load: institutions, students, guardians, devices, queued scans, and a little
history for every other tool (manual use)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click  # noqa: E402

from ops_lib.cli import common_options, run_tool, tool_command, tool_main  # noqa: E402


@tool_command(examples=[
    "python tools/generate_synthetic_load.py  # what the demo data set would insert",
    "python tools/generate_synthetic_load.py --execute",
])
@click.option("--institutions", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--students-per-institution", type=click.IntRange(min=0), default=200,
              show_default=True)
@click.option("--guardians-per-student", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--devices-per-guardian", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--scans", type=click.IntRange(min=0), default=10_000, show_default=True,
              help="Queued attendance scans, spread over --days.")
@click.option("--days", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--unknown-card-ratio", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of scans with a card no student has.")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Same seed and --now, same rows.")
@click.option("--now", "now", type=click.DateTime(["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"]),
              default=None, metavar="'YYYY-MM-DD HH:MM:SS'",
              help="Build the data as of this UTC time (default: now; the tools judge ages "
                   "by their own clock).")
@click.option("--history/--no-history", default=True, show_default=True,
              help="Also a little work for every other tool (the sizes below); "
                   "--no-history: the bare load the worker benchmarks use.")
@click.option("--old-notifications", type=click.IntRange(min=0), default=200, show_default=True,
              help="Notifications past their retention (archive).")
@click.option("--old-audit-logs", type=click.IntRange(min=0), default=200, show_default=True,
              help="Audit logs past their retention (archive).")
@click.option("--old-payments", type=click.IntRange(min=0), default=40, show_default=True,
              help="Paid invoices, each with a settled payment past its retention (archive).")
@click.option("--old-attendance", type=click.IntRange(min=0), default=200, show_default=True,
              help="Attendance records past their retention (archive).")
@click.option("--billing-cases", type=click.IntRange(min=0), default=3, show_default=True,
              help="Fee-paying students with last month's invoice at each reminder step, at "
                   "blocking, and paid after blocking (institutions take one case each).")
@click.option("--report-emails", type=click.IntRange(min=0), default=5, show_default=True,
              help="Queued attendance report emails (worker).")
@click.option("--dead-letters", type=click.IntRange(min=0), default=2, show_default=True,
              help="Failed rows in each worker queue: scans, deliveries, report emails.")
@common_options(writes=True)
def main(institutions, students_per_institution, guardians_per_student, devices_per_guardian,
         scans, days, unknown_card_ratio, seed, now, history, old_notifications,
         old_audit_logs, old_payments, old_attendance, billing_cases, report_emails,
         dead_letters, **options):
    """Insert synthetic rows sized by the flags (dry run: only count them)."""
    from ops_lib.jobs import synthetic_load  # here, not at the top: --help stays fast

    parts = synthetic_load.History(
        old_notifications=old_notifications, old_audit_logs=old_audit_logs,
        old_payments=old_payments, old_attendance=old_attendance, billing_cases=billing_cases,
        report_emails=report_emails, dead_letters=dead_letters,
    ) if history else synthetic_load.NO_HISTORY
    size = synthetic_load.LoadSize(
        institutions=institutions, students_per_institution=students_per_institution,
        guardians_per_student=guardians_per_student, devices_per_guardian=devices_per_guardian,
        scans=scans, days=days, unknown_card_ratio=unknown_card_ratio, seed=seed, history=parts,
    )
    run_tool("generate_synthetic_load", synthetic_load.run, options, size=size, now=now)


if __name__ == "__main__":
    tool_main(main)
