"""Fixtures shared by every test module; the machinery behind them is in ``support``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import trio
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

from trio_chat.server.config import ServerConfig
from trio_chat.server.server import ChatServer

from support import EXEMPT_LOOPBACK, LIMITS_LIFTED, ServerProcess, child_env, hermetic_home

# Property tests (hypothesis): a bounded number of examples, the same ones on every run
# (derandomize: drawn from each test's name, not from a seed that changes), and no example
# database, so a run never replays what another run found; what hypothesis caches (the
# constants it reads in our modules) goes to the run's private home, removed at exit, so a
# run leaves no .hypothesis folder behind.
# HYPOTHESIS_PROFILE=thorough draws many more, at random, for a search by hand.
settings.register_profile(
    "ci",
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("thorough", max_examples=2_000, database=None, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
set_hypothesis_home_dir(hermetic_home() / "hypothesis")

# The client's pseudo-terminal machinery, a plugin of the test modules that name it in
# ``pytest_plugins`` and import from it: its asserts must be rewritten like a test's.
pytest.register_assert_rewrite("pty_support")
# Likewise the in-process server machinery, and the chat harness of the chat's rule tests.
pytest.register_assert_rewrite("inproc")
pytest.register_assert_rewrite("chat_harness")


@pytest.fixture(scope="session", autouse=True)
def hermetic_home() -> Iterator[None]:
    """For the whole session, HOME, XDG_DATA_HOME and XDG_RUNTIME_DIR are in a private
    temporary folder (the one every subprocess gets too), so that no test, and no server
    a test starts, can open the user's own ``~/.local/share/trio_chat/history.db`` or
    make a control socket in the user's runtime folder."""
    private = child_env()
    saved = {name: os.environ.get(name) for name in ("HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR")}
    for name in saved:
        os.environ[name] = private[name]
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def server_process() -> Iterator[type[ServerProcess]]:
    """A factory for server subprocesses; every one started is killed at teardown, and
    the test fails then when the output of one holds a traceback."""
    started: list[ServerProcess] = []

    class Tracked(ServerProcess):
        def __init__(self, *args: str, **kwargs: object) -> None:
            started.append(self)
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    yield Tracked
    for process in started:
        process.stop()
    for process in started:
        assert not process.tracebacks(), f"a traceback in the server's output:\n{process.output}"


@pytest.fixture
async def chat_server(nursery: trio.Nursery) -> AsyncIterator[ChatServer]:
    """A server running in the test's nursery on 127.0.0.1, port 0, default limits (the
    per-address ones lifted for loopback: ``EXEMPT_LOOPBACK``), its messages in memory and
    no history on join."""
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        db=":memory:",
        history_on_join=0,
        limits_exempt=EXEMPT_LOOPBACK,
        **LIMITS_LIFTED,
    )
    server = await nursery.start(ChatServer(config).run)
    yield server
    server.shutdown()


@pytest.fixture
def start_server(nursery: trio.Nursery) -> Callable[..., Awaitable[ChatServer]]:
    """A factory: ``await start_server(queue_depth=4)`` runs a server with those settings
    in the test's nursery (127.0.0.1, port 0; messages in memory, no history on join and
    the per-address limits lifted for loopback, ``EXEMPT_LOOPBACK``, unless given) and
    returns it once it listens; the rate limits lifted too, ``LIMITS_LIFTED``, unless
    given)."""

    async def start(**limits: object) -> ChatServer:
        settings: dict[str, object] = {
            "db": ":memory:",
            "history_on_join": 0,
            "limits_exempt": EXEMPT_LOOPBACK,
            **LIMITS_LIFTED,
            **limits,
        }
        config = ServerConfig(host="127.0.0.1", port=0, **settings)  # type: ignore[arg-type]
        return await nursery.start(ChatServer(config).run)

    return start
