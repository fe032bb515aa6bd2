"""A test-only tool: runs through `run_tool` like every real tool, and waits inside its job.

It takes the run lock under any tool name (`--tool manage_schema` holds the real tool's lock),
writes `--ready-file` once the job is running (so the lock is held and the signal handlers are
installed), then polls `ctx.why_stop()` until `--release-file` appears or a signal arrives.
`--fail` makes the job raise JobFailed instead. Never scheduled; lives in tests/, not tools/.
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import click  # noqa: E402

from ops_lib.cli import common_options, run_tool  # noqa: E402
from ops_lib.errors import JobFailed  # noqa: E402
from ops_lib.result import JobResult  # noqa: E402


def wait_job(ctx, ready_file: str, release_file: str | None, fail: bool) -> JobResult:
    result = JobResult(ctx.tool, ctx.dry_run)
    Path(ready_file).write_text(str(os.getpid()), encoding="utf-8")
    if fail:
        raise JobFailed("the waiting tool was asked to fail")
    polls = 0
    while release_file is None or not Path(release_file).exists():
        reason = ctx.why_stop()
        if reason:
            result.stop_reason = reason
            break
        polls += 1
        time.sleep(0.02)
    result.counts["polls"] = polls
    return result


@click.command()
@click.option("--tool", default="waiting_tool", show_default=True, help="Name of the run lock.")
@click.option("--ready-file", required=True, type=click.Path(dir_okay=False))
@click.option("--release-file", default=None, type=click.Path(dir_okay=False))
@click.option("--fail", is_flag=True)
@common_options(writes=True)
def main(tool, ready_file, release_file, fail, **options):
    run_tool(tool, wait_job, options, ready_file=ready_file, release_file=release_file, fail=fail)


if __name__ == "__main__":
    main()
