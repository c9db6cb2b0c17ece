"""The `composer serve` process: plan the config's graph, claim the run folder, listen, and run
the app under uvicorn until SIGTERM or Ctrl-C. The first signal stops accepting (new requests get
503, new connections are refused), answers every request already taken, runs what is queued,
closes the folder's manifest and exits 0 (EXIT_FAILED when the models could not load)."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Generator
from types import FrameType
from typing import Any

import uvicorn

from composer.serve.app import ServerState, create_app
from composer.serve.folder import ServerFolder, default_path
from composer.serve.service import Service


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, with two changes to how it takes SIGTERM and SIGINT. The app hears of
    the signal at once: uvicorn itself waits for the connections to finish before the app's
    shutdown, while the batcher would still be waiting to fill a round (serve.max_wait_ms) for
    them. And a stop is the clean end of serving (exit 0): uvicorn would raise the signal again
    once shut down, so that the process died of it."""

    def __init__(self, config: uvicorn.Config, state: ServerState):
        super().__init__(config)
        self._state = state

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return
        previous = {signum: signal.signal(signum, self.handle_exit) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._state.stop_accepting()
        super().handle_exit(sig, frame)


class Server:
    """One server: the graph planned and its folder claimed at construction (config mistakes and
    refused folders raise here, before anything listens), the socket bound; run() serves."""

    def __init__(self, config: dict[str, Any], overrides: list[str], host: str = "127.0.0.1", port: int = 8000):
        folder_path = default_path(config)
        service = Service(config, folder_path)  # plans (ConfigError, ServeRefused) before the folder is made
        self.state = ServerState(service, ServerFolder(folder_path, config, overrides), dict(config["serve"]))
        self.socket = _listen(host, port)
        bound_host, bound_port = self.socket.getsockname()[:2]
        self.url = f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}"
        self.state.folder.manifest["server"].update(url=self.url)
        self.state.folder.write()
        app = create_app(self.state)
        self._uvicorn = _Uvicorn(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"), self.state)
        self.state.on_fatal = self.stop

    @property
    def run_dir(self) -> Any:
        return self.state.folder.path

    def run(self) -> int:
        """Serve until stopped; the exit code (EXIT_OK after a clean stop). While it serves,
        every connection a media fetch makes is checked at connect time (fetch.guard_addresses):
        the check of the URL's host before a record queues cannot see redirects or a host that
        resolves elsewhere the second time."""
        from composer.fetch import guard_addresses
        from composer.serve.addresses import non_public

        guard_addresses(non_public)
        try:
            self._uvicorn.run(sockets=[self.socket])
        finally:
            guard_addresses(None)
        return self.state.exit_code

    def stop(self) -> None:
        """What SIGTERM does, for a server run on a thread (tests) or one whose models failed."""
        self.state.stop_accepting()
        self._uvicorn.should_exit = True


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not left 0: asyncio sets TCP_NODELAY only on sockets that say they are
    # TCP, and without it every answer waited ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    return sock


def serve(config: dict[str, Any], overrides: list[str], host: str, port: int) -> int:
    """`composer serve`: serve the config on host:port until SIGTERM / Ctrl-C."""
    server = Server(config, overrides, host, port)
    print(f"composer: serving {server.url} (run folder {server.run_dir}); /readyz answers 200 once the models are loaded",
          flush=True)
    return server.run()


def parse_args(argv: list[str]) -> Any:
    import argparse

    parser = argparse.ArgumentParser(prog="composer serve", description="serve a config's stage graph over HTTP")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free one; the URL is printed)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for `composer run`")
    return parser.parse_args(argv)
