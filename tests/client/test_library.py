"""The package as a library: its version, its lazily imported API, its type hints."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import trio_chat
from trio_chat.client import api
from trio_chat.server import server

from support import ROOT, child_env

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_version_is_the_one_in_pyproject() -> None:
    """__version__ comes from the package metadata, which pyproject.toml writes."""
    assert trio_chat.__version__ == PYPROJECT["project"]["version"]


def test_the_library_api_is_exported() -> None:
    """connect, serve, the errors and ServerConfig are the package's names."""
    assert trio_chat.connect is api.connect
    assert trio_chat.serve is server.serve
    assert trio_chat.ChatError is api.ChatError
    assert issubclass(trio_chat.CommandFailed, trio_chat.ChatError)
    assert issubclass(trio_chat.ChatClosed, trio_chat.ChatError)
    assert set(trio_chat.__all__) <= set(dir(trio_chat))


def test_importing_the_package_loads_neither_trio_nor_sockets() -> None:
    """``import trio_chat`` (and so the sans-I/O core under it) imports no I/O: the API
    is imported on first use, and the version is read only when asked for."""
    probe = (
        "import json, sys; import trio_chat; "
        "loaded = [m for m in ('trio', 'trio_websocket', 'socket', 'sqlite3') "
        "if m in sys.modules]; "
        "trio_chat.connect; "
        "print(json.dumps([loaded, 'trio' in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        check=True,
    )
    assert json.loads(result.stdout) == [[], True]


def test_the_type_hints_ship() -> None:
    """py.typed (PEP 561) is in the package and in the wheel's package data."""
    assert (ROOT / "trio_chat" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["trio_chat"]
