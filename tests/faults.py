"""A loopback TCP proxy between the pool and Redis that fails on demand (our own Toxiproxy).

Modes:
- ``blackhole()`` / ``heal()``: hold every byte in both directions (and new connections) until
  healed, as a network partition does; clients see their socket timeouts fire.
- ``drop_reply_of(b"BLMOVE")``: the next connection that sends this command has the command
  forwarded, but the server's reply is never delivered: the connection is cut instead. The
  server did the work; the client never learns it (a lost reply).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from pool.embedded import free_port


@dataclass
class _Conn:
    doomed: bool = False
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


class FaultProxy:
    def __init__(self, backend_port: int) -> None:
        self.port = free_port()
        self.backend_port = backend_port
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dropped_replies = 0
        self._blackhole = threading.Event()
        self._drop_command: bytes | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="fault-proxy")

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        assert self._ready.wait(10), "proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._blackhole.clear()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def blackhole(self) -> None:
        self._blackhole.set()

    def heal(self) -> None:
        self._blackhole.clear()

    def drop_reply_of(self, command: bytes) -> None:
        self._drop_command = command.upper()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()
        server.close()
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.run_until_complete(asyncio.sleep(0))  # let cancelled pipes unwind
        self._loop.close()

    async def _hold_while_blackholed(self) -> None:
        while self._blackhole.is_set():
            await asyncio.sleep(0.01)  # polling a flag set from another thread

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._hold_while_blackholed()
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
        except OSError:
            writer.close()
            return
        conn = _Conn(writers=[writer, up_writer])
        await asyncio.gather(
            self._pipe(reader, up_writer, conn, to_server=True),
            self._pipe(up_reader, writer, conn, to_server=False),
        )

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _Conn, to_server: bool) -> None:
        try:
            while data := await src.read(65536):
                await self._hold_while_blackholed()
                if to_server and self._drop_command and self._drop_command in data.upper():
                    self._drop_command = None
                    conn.doomed = True
                elif not to_server and conn.doomed:
                    self.dropped_replies += 1
                    break
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for w in conn.writers:
                w.close()
