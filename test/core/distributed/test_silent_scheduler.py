"""A SCHEDULER that accepts connections and never answers stops a run with a clear message within a bounded time.

dask.distributed bounds the TCP connection but then waits for the peer's handshake without a limit, so such a
port (another service, a hung scheduler) used to hang fers:rx for ever with no message.
"""

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from fers.fers_core.distributed.cluster import SCHEDULER_TIMEOUT_ENV, SchedulerWatch, connect
from fers.fers_core.errors import FersError, InputError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                                reason="dask.distributed is not installed")
TIMEOUT_S = 2
BOUND_S = 20  # the old code waited for ever (killed after 60 s in the check on the old code)


class SilentPeer:
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.address = f"tcp://127.0.0.1:{self.server.getsockname()[1]}"
        self.accepted = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:  # closed
                return
            self.accepted.append(connection)

    def close(self):
        for connection in self.accepted:
            connection.close()
        self.server.close()


@pytest.fixture
def silent_peer(monkeypatch):
    monkeypatch.setenv(SCHEDULER_TIMEOUT_ENV, str(TIMEOUT_S))
    peer = SilentPeer()
    yield peer
    peer.close()


@pytest.mark.slow
def test_connecting_to_a_silent_peer_fails_in_bounded_time(silent_peer):
    started = time.monotonic()
    with pytest.raises(InputError, match=r"accepted the connection but did not answer within 2 s.*not another "
                                         r"service's.*FERS_SCHEDULER_TIMEOUT_S"):
        with connect(silent_peer.address):
            pass
    assert time.monotonic() - started < BOUND_S
    assert silent_peer.accepted  # it did connect: the wait was for an answer


@pytest.mark.slow
def test_a_scheduler_that_stops_answering_mid_run_is_reported(tmp_path, monkeypatch):
    """A real `dask scheduler` process, stopped with SIGSTOP: connections stay open, no answer ever comes."""
    monkeypatch.setenv(SCHEDULER_TIMEOUT_ENV, str(TIMEOUT_S))
    from distributed import Client

    scheduler_file = tmp_path / "scheduler.json"
    process = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                "--port", "0", "--dashboard-address", "127.0.0.1:0", "--scheduler-file",
                                str(scheduler_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = Client(scheduler_file=str(scheduler_file), timeout="30s", set_as_default=False)
        try:
            watch = SchedulerWatch(client)
            watch._last -= 2 * TIMEOUT_S  # as after a long wait without news
            watch.check()  # answers while running
            os.kill(process.pid, signal.SIGSTOP)
            watch._last -= 2 * TIMEOUT_S
            started = time.monotonic()
            with pytest.raises(FersError, match="stopped answering: no reply within 2 s"):
                watch.check()
            assert time.monotonic() - started < BOUND_S
            os.kill(process.pid, signal.SIGCONT)
        finally:
            client.close(timeout=5)
    finally:
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        process.wait(30)
