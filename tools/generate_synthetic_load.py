"""Generate synthetic load: institutions, students, guardians, devices, queued scans (manual use)."""

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
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same rows.")
@common_options(writes=True)
def main(institutions, students_per_institution, guardians_per_student, devices_per_guardian,
         scans, days, unknown_card_ratio, seed, **options):
    """Insert synthetic rows sized by the flags (dry run: only count them)."""
    from ops_lib.jobs import synthetic_load  # here, not at the top: --help stays fast

    size = synthetic_load.LoadSize(
        institutions=institutions, students_per_institution=students_per_institution,
        guardians_per_student=guardians_per_student, devices_per_guardian=devices_per_guardian,
        scans=scans, days=days, unknown_card_ratio=unknown_card_ratio, seed=seed,
    )
    run_tool("generate_synthetic_load", synthetic_load.run, options, size=size)


if __name__ == "__main__":
    tool_main(main)
