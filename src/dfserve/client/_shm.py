"""System shared memory for callers on the same host as the server (tritonclient's `shared_memory` utilities).

In `pixels` mode with ``shared_memory=True`` each in-flight request borrows a *slot*: one region holding the
request's uint8 pixels at offset 0 and the model's float32 scores after them, so neither crosses the socket.
Regions are created on demand (as many as requests run at once), registered with the server once, reused,
and on `close()` unregistered from the server and destroyed. A `weakref.finalize` hook also destroys the
local regions at interpreter exit, so a caller who forgets `close()` leaves nothing in /dev/shm.

Registration goes through Triton's shared-memory API, which a dfserve server restricts to callers that send
its key header: pass it with ``Client(headers={...})``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
import weakref

import numpy as np

from dfserve.client._exceptions import SharedMemoryError

_ALIGN = 64


class ShmSlot:
    """One local region: input pixels at offset 0, output scores at `output_offset`."""

    def __init__(self, name: str, input_nbytes: int, output_nbytes: int) -> None:
        from tritonclient.utils import shared_memory as shm

        self.name = name
        self.key = f"/{name}"
        self.input_nbytes = input_nbytes
        self.output_offset = -(-input_nbytes // _ALIGN) * _ALIGN
        self.output_nbytes = output_nbytes
        self.byte_size = self.output_offset + output_nbytes
        self.registered = False
        try:
            self.handle = shm.create_shared_memory_region(name, self.key, self.byte_size, create_only=True)
        except shm.SharedMemoryException as exc:
            raise SharedMemoryError(
                f"cannot create shared-memory region {self.key} ({self.byte_size} bytes): {exc}"
            ) from exc
        self._destroyed = False

    def write_input(self, pixels: np.ndarray) -> None:
        from tritonclient.utils import shared_memory as shm

        if pixels.nbytes != self.input_nbytes:
            raise SharedMemoryError(
                f"pixels are {pixels.nbytes} bytes but region {self.name} holds {self.input_nbytes}"
            )
        shm.set_shared_memory_region(self.handle, [np.ascontiguousarray(pixels)])

    def read_output(self, count: int) -> np.ndarray:
        from tritonclient.utils import shared_memory as shm

        view = shm.get_contents_as_numpy(self.handle, np.float32, [1, count], offset=self.output_offset)
        return np.array(view, copy=True)  # the slot is reused by the next request

    def destroy(self) -> None:
        from tritonclient.utils import shared_memory as shm

        if not self._destroyed:
            self._destroyed = True
            shm.destroy_shared_memory_region(self.handle)


def _destroy_all(slots: list[ShmSlot]) -> None:
    for slot in slots:
        with contextlib.suppress(Exception):
            slot.destroy()


class ShmPool:
    """Slots on loan to in-flight requests. Thread-safe; the owning client does the server calls."""

    def __init__(self, input_nbytes: int, output_nbytes: int) -> None:
        self.input_nbytes = input_nbytes
        self.output_nbytes = output_nbytes
        self.prefix = f"dfserve_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._free: list[ShmSlot] = []
        self._all: list[ShmSlot] = []
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _destroy_all, self._all)

    @property
    def slots(self) -> list[ShmSlot]:
        return list(self._all)

    def take(self) -> ShmSlot:
        """A free slot, or a new local region (`registered` False: the caller registers it with the server)."""
        with self._lock:
            if self._free:
                return self._free.pop()
            slot = ShmSlot(f"{self.prefix}_{len(self._all)}", self.input_nbytes, self.output_nbytes)
            self._all.append(slot)
            return slot

    def give(self, slot: ShmSlot) -> None:
        with self._lock:
            self._free.append(slot)

    def discard(self, slot: ShmSlot) -> None:
        """Drop a slot that could not be registered."""
        with self._lock:
            if slot in self._all:
                self._all.remove(slot)
        slot.destroy()

    def destroy(self) -> None:
        """Destroy every local region (after the client unregistered them from the server)."""
        with self._lock:
            self._free.clear()
            _destroy_all(self._all)
            self._all.clear()
