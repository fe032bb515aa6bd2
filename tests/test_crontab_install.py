"""`manage_schedule.py install-crontab`: a marked block that a re-run replaces and --remove takes
out, every other byte of the crontab left as it was; a dry run writes nothing."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ops_lib.errors import BadInput
from ops_lib.jobs.schedule_admin import with_block
from ops_lib.schedule_files import BLOCK_BEGIN, BLOCK_END, crontab_block
from tests.conftest import REPO, run_cli, sqlite_database, tool_env

# A user's own crontab: odd spacing, tabs, comments, env lines, a % escape, a CRLF line, a
# byte that is not UTF-8, and no newline after the last line.
FOREIGN = (b"# my own jobs\n"
           b"MAILTO=admin@example.org\n"
           b"  5  4 * * 1\t/usr/local/bin/backup.sh   --full  \n"
           b"\n"
           b"@reboot   /home/me/start.sh > /dev/null 2>&1\n"
           b"0 * * * * date +\\%s >> /tmp/stamps\r\n"
           b"# caf\xe9 au lait\n"
           b"*/10 * * * * echo last-line-without-newline")


@pytest.fixture
def env(tmp_path):
    return tool_env(sqlite_database(tmp_path), tmp_path)


def install(env, crontab: Path, *args: str, code: int = 0):
    done = run_cli("manage_schedule", "install-crontab", "--crontab-file", str(crontab), *args,
                   env=env)
    assert done.returncode == code, done.stderr
    return done


def blocks(text: bytes) -> int:
    return text.count(BLOCK_BEGIN.encode())


def test_install_reinstall_change_and_remove_leave_foreign_lines_byte_for_byte(env, tmp_path):
    crontab = tmp_path / "crontab"
    crontab.write_bytes(FOREIGN)
    done = install(env, crontab, "--execute")
    assert "crontab: crontab=" in done.stdout and "change=installed" in done.stdout
    installed = crontab.read_bytes()
    # The only change to the user's text: its last line gets the newline cron needs.
    assert installed.startswith(FOREIGN + b"\n" + BLOCK_BEGIN.encode() + b"\n")
    assert installed.endswith(BLOCK_END.encode() + b"\n") and blocks(installed) == 1
    assert f"* * * * *     cd {shlex.quote(str(REPO))} && set -a && . /etc/ops-toolkit.env && ".encode(
    ) in installed
    assert f"timeout -k 60 540 {sys.executable} tools/run_background_workers.py".encode() in (
        installed)

    assert "change=unchanged" in install(env, crontab, "--execute").stdout
    assert crontab.read_bytes() == installed  # re-run: no second block

    # Lines added by hand after the block stay where they are when the block changes.
    crontab.write_bytes(installed + b"30 5 * * * /home/me/later.sh\n")
    done = install(env, crontab, "--execute", "--env-file", "/etc/other.env")
    assert "change=replaced" in done.stdout
    changed = crontab.read_bytes()
    assert blocks(changed) == 1 and b" . /etc/other.env && " in changed
    assert changed.startswith(FOREIGN + b"\n" + BLOCK_BEGIN.encode())
    assert changed.endswith(BLOCK_END.encode() + b"\n30 5 * * * /home/me/later.sh\n")

    assert "change=removed" in install(env, crontab, "--remove", "--execute").stdout
    assert crontab.read_bytes() == FOREIGN + b"\n30 5 * * * /home/me/later.sh\n"
    assert "change=unchanged" in install(env, crontab, "--remove", "--execute").stdout


def test_the_dry_run_shows_the_diff_and_writes_nothing(env, tmp_path):
    crontab = tmp_path / "crontab"
    crontab.write_bytes(FOREIGN)
    os.utime(crontab, (1_000_000_000, 1_000_000_000))
    done = install(env, crontab)
    assert "dry_run=yes" in done.stdout and "change=installed" in done.stdout
    assert f"+{BLOCK_BEGIN}\n" in done.stdout and "+* * * * *  " in done.stdout
    assert crontab.read_bytes() == FOREIGN and crontab.stat().st_mtime == 1_000_000_000
    missing = tmp_path / "cron.d-ops-toolkit"
    install(env, missing)
    assert not missing.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_cron_d_file_names_the_user_and_the_optional_jobs_of_the_setting(env, tmp_path):
    crontab = tmp_path / "ops-toolkit"
    env = {**env, "OPS_OPTIONAL_JOBS": "check_schema_drift"}
    install(env, crontab, "--cron-user", "opsuser", "--python", "/usr/bin/python3", "--execute")
    text = crontab.read_text(encoding="ascii")
    assert "\n* * * * *     opsuser cd " in text
    assert "\n0 6 1 * *     opsuser cd " in text  # the optional job the setting names is live
    assert "\n# 0 4 * * *     opsuser cd " in text  # the others stay commented out


def test_a_broken_block_is_refused_and_left_alone(env, tmp_path):
    crontab = tmp_path / "crontab"
    crontab.write_bytes(FOREIGN + b"\n" + BLOCK_BEGIN.encode() + b"\n* * * * * true\n")
    done = install(env, crontab, "--execute", code=2)
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        "error: the crontab's ops-toolkit block has a BEGIN line without its END line (or the "
        "other way round): fix it by hand (crontab -e)"]
    assert crontab.read_bytes() == FOREIGN + b"\n" + BLOCK_BEGIN.encode() + b"\n* * * * * true\n"


def test_options_of_install_crontab_alone_are_refused_before_connecting(tmp_path):
    env = tool_env("sqlite:///" + str(tmp_path / "none.db"), tmp_path)
    done = run_cli("manage_schedule", "generate", "--remove", "--cron-user", "x", env=env)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: --remove goes with install-crontab", "error: --cron-user goes with install-crontab",
        "error: --cron-user is for a file in /etc/cron.d: give --crontab-file too"]


def test_the_users_crontab_through_the_crontab_command(env, tmp_path):
    # A stand-in for cron's `crontab` program (not our code): -l prints the stored file or says
    # there is none, as cron does; - stores stdin.
    store = tmp_path / "spool"
    program = tmp_path / "bin" / "crontab"
    program.parent.mkdir()
    program.write_text(
        f"#!{sys.executable}\n"
        "import sys, pathlib\n"
        f"store = pathlib.Path({str(store)!r})\n"
        "if sys.argv[1:] == ['-l']:\n"
        "    if not store.exists():\n"
        "        sys.exit(print('no crontab for tester', file=sys.stderr) or 1)\n"
        "    sys.stdout.buffer.write(store.read_bytes())\n"
        "elif sys.argv[1:] == ['-']:\n"
        "    store.write_bytes(sys.stdin.buffer.read())\n"
        "else:\n"
        "    sys.exit(2)\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    env = {**env, "PATH": f"{program.parent}{os.pathsep}{env['PATH']}"}
    done = run_cli("manage_schedule", "install-crontab", "--execute", env=env)
    assert done.returncode == 0, done.stderr
    assert "change=installed" in done.stdout
    assert store.read_bytes().startswith(BLOCK_BEGIN.encode() + b"\n")
    store.write_bytes(FOREIGN + b"\n" + store.read_bytes())
    done = run_cli("manage_schedule", "install-crontab", "--remove", "--execute", env=env)
    assert done.returncode == 0, done.stderr
    assert store.read_bytes() == FOREIGN + b"\n"


def test_with_block_on_text():
    block = crontab_block()
    assert with_block("", block) == block
    assert with_block("a\n", None) == "a\n"
    assert with_block(with_block("a\n", block), None) == "a\n"
    other = crontab_block(env_file="/x")
    assert with_block(with_block("a\n", block) + "b\n", other) == "a\n" + other + "b\n"


def test_two_blocks_are_refused():
    twice = with_block("", crontab_block()) + crontab_block()
    with pytest.raises(BadInput, match="more than one ops-toolkit block"):
        with_block(twice, None)


def test_the_block_sets_no_environment_line_for_the_lines_after_it():
    """cron applies NAME=value to every later line, other people's too: the block has none."""
    from ops_lib.schedule_files import SCHEDULE

    block = crontab_block(home="/opt/ops home", env_file="/etc/o's.env", python="/usr/bin/py")
    own = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(own) == sum(1 for job in SCHEDULE if not job.optional)
    assert all(line.split()[5] == "cd" for line in own), own  # five time fields, then the command
    assert all("cd '/opt/ops home' && set -a && . '/etc/o'\"'\"'s.env' && set +a" in line
               for line in own)


def test_a_block_line_runs_under_crons_bare_sh_with_spaces_and_quotes_in_the_paths(tmp_path):
    """What cron does with a line: /bin/sh -c, cron's PATH, no other environment."""
    from ops_lib.schedule import ScheduledJob
    from ops_lib.schedule_files import cron_command

    home = tmp_path / "ops home's"
    (home / "tools").mkdir(parents=True)
    (home / "tools" / "show.py").write_text(
        "import os, sys\nprint(os.getcwd(), os.environ['OPS_DATABASE_URL'], sys.argv[1:])\n")
    env_file = tmp_path / "my env"
    env_file.write_text("OPS_DATABASE_URL='mysql://u:p&q;$x@h/db'\n")
    job = ScheduledJob("show", "* * * * *", ("--execute",), 60, False, False, 60, "show")
    command = cron_command(job, sys.executable, home=str(home), env_file=str(env_file))
    done = subprocess.run(["/bin/sh", "-c", command], env={"PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{home} mysql://u:p&q;$x@h/db ['--execute']\n"


def test_a_time_zone_line_above_the_block_gets_a_warning(env, tmp_path):
    crontab = tmp_path / "crontab"
    crontab.write_bytes(FOREIGN.replace(b"MAILTO=admin@example.org\n",
                                        b"MAILTO=admin@example.org\nCRON_TZ=Europe/Berlin\n"))
    done = install(env, crontab)
    assert ("note: the crontab sets 'CRON_TZ=Europe/Berlin' above the block: its times are UTC"
            in done.stdout)
    assert "above the block" not in install(env, tmp_path / "empty").stdout
