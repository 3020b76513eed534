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


def test_load_generator_measures_all_three_servers_at_tiny_scale() -> None:
    """scripts/bench.py starts trio_chat (its flood limits lifted; with --limits, on and
    set just above what it sends, too; with --tls, over TLS with a CA of its own) and both
    peers, drives both modes and the abuse scenarios (trio_chat, its limits at their
    defaults), checks that every message reached every
    client once, and prints the ratios, TLS to plain among them."""
    result = subprocess.run(
        [
            sys.executable,
            "scripts/bench.py",
            "--clients",
            "4",
            "--senders",
            "2",
            "--messages",
            "5",
            "--window",
            "2",
            "--fanout-clients",
            "5",
            "--rounds",
            "2",
            "--timeout",
            "30",
            "--tls",
            "--limits",
            "--flood-seconds",
            "0.5",
            "--flood-connections",
            "3",
            "--attempts",
            "20",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=child_env(),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "throughput: 4 clients, 2 senders x 5 messages, window 2" in out
    for server in ("trio_chat", "asyncio", "trio", r"trio_chat\+tls", r"trio_chat\+limits"):
        assert re.search(
            rf"^{server} +\d+ +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+ +0 +0$", out, re.M
        )
        assert re.search(rf"^{server} +[\d.-]+ +[\d.]+  [\d. ]+$", out, re.M)
    assert re.search(r"^trio_chat / asyncio: deliveries/s [\d.]+x, p99 [\d.]+x$", out, re.M)
    assert re.search(r"^trio_chat / trio: fan-out time [\d.]+x, RSS per connection", out, re.M)
    assert re.search(
        # At this scale the server's CPU time may round to no clock tick at all: n/a.
        r"^trio_chat\+tls / trio_chat: server CPU per delivery (?:[\d.]+x|n/a),"
        r" deliveries/s [\d.]+x$",
        out,
        re.M,
    )
    assert re.search(
        r"^trio_chat\+limits / trio_chat \(limits lifted\): server CPU per delivery"
        r" (?:[\d.]+x|n/a), deliveries/s [\d.]+x, p99 [\d.]+x$",
        out,
        re.M,
    )
    assert re.search(
        r"^trio_chat\+tls / trio_chat: fan-out time [\d.]+x, RSS per connection [\d.]+x$", out, re.M
    )
    assert "delivery check: every message reached every client exactly once" in out
    assert "abuse: trio_chat with its default limits, 5 normal clients at 4 messages/s" in out
    for connections in (1, 3):
        assert re.search(
            rf"^flood from {connections} connection\(s\) of one address, 0\.5 s: normal client"
            r" p99 idle [\d.]+ ms, during [\d.]+ ms \((?:[\d.]+x|n/a); \d+ samples each\);"
            r" flood lines sent \d+, seen by normal clients \d+; flooders closed \d+ times,"
            r" refused \d+ times; normal clients closed: .+;"
            r" server RSS [\d.]+ MiB before, [\d.]+ MiB after;"
            r" CPU while flooding: server \d+%, load \d+%$",
            out,
            re.M,
        )
    assert re.search(
        r"^20 connection attempts from one address: \d+ got in, refused: .+; a normal client"
        r" from another address then got in in [\d.]+ ms$",
        out,
        re.M,
    )
