"""A test-only job for the scheduler service (tests/test_run_scheduler.py): never a real tool.

Linked into a test's tools folder as `<name>.py`, it writes `<dir>/<name>.<pid>.started` once
its signal handling is in place (with `--ledger`, after writing its run's row to the run ledger
of OPS_DATABASE_URL, as a real tool does), then: `--exit N` exits at once with N;
`--wait-for FILE` waits until the test creates FILE (exit 0); without either it waits for a
signal. On SIGTERM it writes
`<dir>/<name>.<pid>.term` and exits 143, unless `--ignore-term` (then only SIGKILL ends it).
"""

import argparse
import os
import signal
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--dir", required=True)
parser.add_argument("--exit", type=int, default=None)
parser.add_argument("--wait-for", default=None)
parser.add_argument("--ignore-term", action="store_true")
parser.add_argument("--ledger", action="store_true")
args = parser.parse_args()
name = Path(sys.argv[0]).stem
folder = Path(args.dir)


def on_term(_signum, _frame):
    (folder / f"{name}.{os.getpid()}.term").write_text("", encoding="utf-8")
    sys.exit(143)


signal.signal(signal.SIGTERM, signal.SIG_IGN if args.ignore_term else on_term)
if args.ledger:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))
    from ops_lib.db import connect
    from ops_lib.ledger import RunLedger, new_run_id

    RunLedger(connect(os.environ["OPS_DATABASE_URL"]), name, new_run_id(), {}, False).start()
(folder / f"{name}.{os.getpid()}.started").write_text(" ".join(sys.argv), encoding="utf-8")
print(f"{name} started", flush=True)
if args.exit is not None:
    sys.exit(args.exit)
while args.wait_for is None or not Path(args.wait_for).exists():
    time.sleep(0.02)
print(f"{name} done", flush=True)
