import asyncio
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from rally_peers import RALLY_BIN, Server  # noqa: E402


def pytest_sessionstart(session):
    # Missing pieces fail the run; they are never skipped.
    if not os.access(RALLY_BIN, os.X_OK):
        raise pytest.UsageError(
            f"rally binary not found or not executable: {RALLY_BIN} "
            "(build it with `cargo build --release` or set RALLY_BIN)"
        )


@pytest.fixture
def start_server():
    """Factory: start_server(*flags, real_cert=False) -> Server; all are
    killed at teardown."""
    started = []

    def start(*flags, **kw):
        s = Server(*flags, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        alive = s.alive()
        s.stop()
        assert alive or s.expect_exit, f"the server process died during the test:\n{s.stderr()[-3000:]}"


def _unused_run(coro, timeout=60):
    """Runs one test coroutine with a deadline so a hang fails, not stalls."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
