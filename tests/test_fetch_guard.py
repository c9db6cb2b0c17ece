"""Issue 20: a server's media fetches are checked at connect time, on the addresses connected to,
so neither a redirect nor a host that resolves elsewhere the second time (DNS rebinding) reaches
inside the network. Real HTTP servers on loopback; the guard in each test refuses one of them."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
from collections.abc import Iterator

import pytest

from composer import fetch
from composer.fetch import FetchError, fetch_bytes
from composer.serve.addresses import refused_url

BODY = b"the internal secret"


class _Handler(http.server.BaseHTTPRequestHandler):
    redirect_to = ""

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", _Handler.redirect_to)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


def _serve(host: str) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer((host, 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def outside() -> Iterator[str]:
    """Stands for a public server (the guard lets 127.0.0.1 through)."""
    yield from _serve("127.0.0.1")


@pytest.fixture
def inside() -> Iterator[str]:
    """Stands for an address inside the network (the guard refuses 127.0.0.2)."""
    yield from _serve("127.0.0.2")


INSIDE = ipaddress.ip_address("127.0.0.2")


@pytest.fixture
def guard() -> Iterator[None]:
    fetch.guard_addresses(lambda address: "an inside" if address == INSIDE else None)
    yield
    fetch.guard_addresses(None)


def test_without_a_guard_both_are_fetched(outside, inside):
    _Handler.redirect_to = f"{inside}/secret"
    assert fetch_bytes(f"{outside}/redirect", timeout=5, max_bytes=1000) == BODY


def test_a_redirect_inside_the_network_is_refused(guard, outside, inside):
    assert fetch_bytes(f"{outside}/file", timeout=5, max_bytes=1000) == BODY
    _Handler.redirect_to = f"{inside}/secret"
    with pytest.raises(FetchError, match=r"is an inside address 127\.0\.0\.2: not fetched"):
        fetch_bytes(f"{outside}/redirect", timeout=5, max_bytes=1000)


def test_a_host_that_resolves_inside_for_the_fetch_is_refused(guard, inside, monkeypatch):
    """DNS rebinding: the name resolves to a public address when the server checks it, and to
    an inside one when the fetch connects."""
    port = int(inside.rsplit(":", 1)[1])
    real = socket.getaddrinfo
    answers = iter(["93.184.216.34", "127.0.0.2"])

    def rebinding(host, *args, **kwargs):
        if host == "rebind.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (next(answers), port))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = f"http://rebind.test:{port}/secret"
    assert refused_url(url, allow_urls=True) is None  # the check before queueing sees a public address
    with pytest.raises(FetchError, match=r"is an inside address 127\.0\.0\.2"):
        fetch_bytes(url, timeout=5, max_bytes=1000)


def test_a_server_guards_its_fetches_while_it_serves(tmp_path):
    from conftest import ROWS, write_jsonl
    from test_serve import BASE, InProcess

    rows = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    with InProcess([*BASE, f"input.path={rows}"], tmp_path / "served"):
        assert fetch._guard is not None and fetch._guard(ipaddress.ip_address("10.0.0.1")) == "a private"
    assert fetch._guard is None  # stopped: runs in this process fetch as before
