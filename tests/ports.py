"""A free localhost port, for tests that start a server or an accelerate launch."""

import socket


def free_port() -> int:
    """A localhost port nothing listens on now: tests run side by side (pytest -n) must not share one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
