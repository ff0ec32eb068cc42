"""The reference host as a real OS process (``secured-activation serve``), on a free loopback port."""

from __future__ import annotations

from tests.process_host import ServedModule


class Host(ServedModule):
    """``secured-activation serve`` with ``args``."""

    def __init__(self, *args: str) -> None:
        super().__init__(["statemachine", "serve", "--port", "{port}", *args], "serve")
