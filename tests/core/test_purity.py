"""The core is pure: importing all of it loads no I/O (no trio, sqlite3 or socket) and
nothing of the server or the client. Checked in a fresh interpreter, so that what other
tests imported does not hide an import."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import trio_chat.core

from support import EVENT_TIMEOUT, ROOT, child_env

#: Modules the core must never load, directly or through what it imports.
FORBIDDEN = ("trio", "sqlite3", "socket", "trio_chat.server", "trio_chat.client")

CHECK = """
import importlib, json, sys
for name in {modules!r}:
    importlib.import_module(name)
forbidden = {forbidden!r}
print(json.dumps(sorted(
    loaded for loaded in sys.modules
    if any(loaded == bad or loaded.startswith(bad + ".") for bad in forbidden)
)))
"""


def core_modules() -> list[str]:
    """Every module of ``trio_chat.core``, found on disk (a new one is checked too)."""
    return ["trio_chat.core"] + [
        f"trio_chat.core.{info.name}" for info in pkgutil.iter_modules(trio_chat.core.__path__)
    ]


def test_the_core_imports_no_io_and_neither_server_nor_client() -> None:
    """A fresh interpreter that imports every core module has none of FORBIDDEN loaded."""
    modules = core_modules()
    assert {"trio_chat.core.events", "trio_chat.core.render", "trio_chat.core.wire"} <= set(modules)
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(modules=modules, forbidden=FORBIDDEN)],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=EVENT_TIMEOUT,
        check=True,
    )
    assert json.loads(result.stdout) == []


def test_the_check_sees_a_forbidden_import() -> None:
    """The same check run on a module that loads trio reports it (the test can fail)."""
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(modules=["trio_chat.server.bus"], forbidden=FORBIDDEN)],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=EVENT_TIMEOUT,
        check=True,
    )
    assert "trio" in json.loads(result.stdout)
