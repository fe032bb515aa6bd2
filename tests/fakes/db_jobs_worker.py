"""A test-only entry: the real background worker (tools/run_background_workers.py, the same
arguments) with the test job types of tests/fakes/db_job_handlers.py in the registry."""

import os
import runpy
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from tests.fakes.db_job_handlers import register  # noqa: E402

if __name__ == "__main__":
    register()
    runpy.run_path(os.path.join(REPO, "tools", "run_background_workers.py"), run_name="__main__")
