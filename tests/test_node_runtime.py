"""The node's own task runtime shares its process with `fedshop node`: what Flower's per-task process may do
on an unknown token (interrupt itself) must not stop the node."""

import http.server
import threading

import httpx
import pytest

from fedshop.client.node.runtime import _client
from fedshop.core.flower_private import AcquireTaskRequest, RuntimeVersionHttpInterceptor


class _Refuses(http.server.BaseHTTPRequestHandler):
    """A runtime API that no longer knows the caller: HTTP 401 to everything."""

    def do_POST(self) -> None:  # noqa: N802 - the handler's name is http.server's
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_an_unknown_token_fails_the_call_and_does_not_interrupt_the_node() -> None:
    """Flower's HTTP retry sends SIGINT to its own process on a 401: after a SuperNode restart the
    runtime's in-flight task got one, and the whole `fedshop node` stopped (CI, a killed SuperLink)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = _client(f"127.0.0.1:{server.server_address[1]}", RuntimeVersionHttpInterceptor(component_name="SuperExec"),
                     max_time=5)
    try:
        with pytest.raises(httpx.HTTPStatusError):
            client.AcquireTask(AcquireTaskRequest(supported_task_types=[], agentapp_fab_hashes=[]))
    finally:
        client.close()
        server.shutdown()
