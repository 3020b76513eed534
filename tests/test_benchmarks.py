"""The benchmark scripts, run at a tiny scale so that they keep working.

Only that they run and report is checked here: timing figures belong in notes, never in
assertions.
"""

from __future__ import annotations

import re
import subprocess
import sys

from support import ROOT, child_env


def test_store_benchmark_runs_and_reports_both_modes() -> None:
    """scripts/bench_store.py stores every message both ways and prints the ratio."""
    result = subprocess.run(
        [sys.executable, "scripts/bench_store.py", "--clients", "3", "--messages", "4"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=child_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == "12 messages from 3 concurrent senders, SQLite WAL, synchronous=NORMAL"
    assert re.fullmatch(r"grouped commits: +\d+ messages/s in \d+ commits", lines[1])
    assert re.fullmatch(r"one per message: +\d+ messages/s in 12 commits", lines[2])
    assert re.fullmatch(r"ratio grouped / one per message: \d+\.\dx", lines[3])
