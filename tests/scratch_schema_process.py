"""Test-only: prepare a scratch schema as the drift check does, in a process a test can signal.

    python tests/scratch_schema_process.py LIVE_DATABASE_URL [--sweep-older-than-minutes N]
        [--lock-wait-timeout S]

Installs the tools' StopSignal, logs at DEBUG on stderr (the scratch's name once loaded), runs
`scratch_schema` and prints the scratch's name on stdout if it gets that far. An OpsError is one
line on stderr and exit 1, as run_tool shows it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops_lib.db import connect  # noqa: E402
from ops_lib.errors import OpsError  # noqa: E402
from ops_lib.runtime import StopSignal  # noqa: E402
from ops_lib.scratch_schema import scratch_schema  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--sweep-older-than-minutes", type=float, default=60)
    parser.add_argument("--lock-wait-timeout", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                        format="%(levelname)s %(message)s")
    stop = StopSignal()
    stop.install()
    database = connect(args.url)
    try:
        with scratch_schema(database.engine, database.engine.url.database, stop=stop,
                            sweep_older_than=dt.timedelta(minutes=args.sweep_older_than_minutes),
                            lock_wait_timeout=args.lock_wait_timeout) as name:
            print(name, flush=True)
    except OpsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        database.engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
