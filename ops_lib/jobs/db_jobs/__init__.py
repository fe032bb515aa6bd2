"""Jobs the web app defines in `cron_jobs`, run by the background worker's `dbjobs` stage.

handlers.py: the job registry; slots.py: what a row means and its slots; runner.py: validation,
one slot's run and its bookkeeping; figures.py: queue health's figures; admin.py: the support
tool (manage_db_jobs.py). Rules: docs/db-jobs.md.
"""

# The support tool's actions; here, without SQLAlchemy, so its --help stays fast.
ACTIONS = ("list", "pause", "resume", "run")
