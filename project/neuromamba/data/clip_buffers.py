"""Shared-memory buffers that a DataLoader worker reuses for the clips it delivers.

Why: a worker hands each batch to the training process through shared memory, and by default
torch makes a new segment for every batch. Filling a fresh shared-memory segment costs far more
than reading the clip into it (on the 2-core reference machine, 35 MB: 46 ms of page faults
against a 5 ms read; benchmarks/data_loading.py), so a worker that allocates per batch runs at
~0.1 of the read floor. Each worker therefore keeps a ring of segments and reads every batch
straight into the next one (:meth:`ClipConcat.__getitems__`): no allocation, no collate copy.

A slot is reused ``SLOTS`` batches later. The DataLoader keeps a worker at most
``prefetch_factor`` batches ahead of the batches handed out, and the training loop holds at most
two (the step's and the one fetched ahead), so with the default prefetch of 2 a slot is free long
before its reuse. That is checked, not assumed: every slot carries a stamp in shared memory, odd
while the worker writes; whoever reads a batch (the pin-memory copy, the copy to the device, or
the scaling on the CPU) compares the stamp afterwards and refuses a batch whose slot was
rewritten meanwhile. A wrong batch is never used.
"""
from __future__ import annotations

from bisect import bisect_right

import numpy as np
import torch
from torch.utils.data import ConcatDataset, default_collate, get_worker_info

SLOTS = 6  # batches of shared memory per worker: prefetch_factor 2 + 2 held + 2 spare


class BufferRing:
    """``SLOTS`` shared-memory clip buffers of one worker, handed out in turn."""

    def __init__(self, slots: int | None = None):
        self.slots = slots or SLOTS
        self.buffers: list = [None] * self.slots
        self.stamps = torch.zeros(self.slots, dtype=torch.int64).share_memory_()
        self.next = 0

    def take(self, batch: int, layout: dict) -> tuple:
        """The next slot (its stamp marked 'being written') as one tensor per field of
        ``layout`` (name -> (shape, dtype) of one item), each ``(batch, *shape)``, all on one
        shared segment: a batch then crosses to the training process as one segment."""
        slot = self.next
        self.next = (slot + 1) % self.slots
        offsets, nbytes = {}, 0
        for name, (shape, dtype) in layout.items():
            size = torch.empty((), dtype=dtype).element_size()
            nbytes = -(-nbytes // 8) * 8  # 8-byte aligned
            offsets[name] = nbytes
            nbytes += batch * int(np.prod(shape, dtype=np.int64)) * size
        storage = self.buffers[slot]
        if storage is None or storage.nbytes() < nbytes:  # first use, or a larger batch
            storage = self.buffers[slot] = torch.UntypedStorage._new_shared(nbytes)
        self.stamps[slot] += 1  # odd: being written
        views = {}
        for name, (shape, dtype) in layout.items():
            size = torch.empty((), dtype=dtype).element_size()
            views[name] = torch.empty(0, dtype=dtype).set_(storage, offsets[name] // size,
                                                          (batch, *shape))
        return slot, views

    def done(self, slot: int) -> int:
        self.stamps[slot] += 1  # even: ready
        return int(self.stamps[slot])


class StoredBatch(dict):
    """A collated batch whose tensors live in a worker's :class:`BufferRing` slot. Copying it
    (pinning, moving to a device) checks the slot afterwards and returns a plain dict."""

    def __init__(self, batch: dict, stamps: torch.Tensor, slot: int, stamp: int):
        super().__init__(batch)
        self.stamps, self.slot, self.stamp = stamps, slot, stamp

    def check(self) -> None:
        if int(self.stamps[self.slot]) != self.stamp:
            raise RuntimeError(
                "a DataLoader worker rewrote a clip buffer before the batch in it was used (more "
                f"than {len(self.stamps)} batches in flight); the batch was refused. Lower the "
                "DataLoader's prefetch_factor or raise neuromamba.data.clip_buffers.SLOTS")

    def _copied(self, copy) -> dict:
        out = {k: copy(v) if torch.is_tensor(v) else v for k, v in self.items()}
        self.check()
        return out

    def pin_memory(self, device=None) -> dict:
        return self._copied(lambda t: t.pin_memory())

    def to(self, device, *args, **kwargs):
        if torch.device(device).type == "cpu":
            return self  # no copy: the scaling reads the slot and checks it (datasets.model_input)
        return self._copied(lambda t: t.to(device, *args, **kwargs))


class ClipConcat(ConcatDataset):
    """The clips of several ClipDatasets (``deliver="stored"``). In a DataLoader worker a batch
    is read straight into one shared buffer of the worker's ring (``__getitems__``, which torch's
    fetcher calls with the batch's indices) and collated by :func:`collate_clips` without a copy."""

    def __init__(self, datasets):
        super().__init__(datasets)
        self._ring = None

    def __getstate__(self):  # each worker makes its own ring
        state = dict(self.__dict__)
        state["_ring"] = None
        return state

    def _locate(self, index: int):
        part = bisect_right(self.cumulative_sizes, index)
        local = index - (self.cumulative_sizes[part - 1] if part else 0)
        return self.datasets[part], local

    def __getitems__(self, indices):
        located = [self._locate(int(i)) for i in indices]
        if get_worker_info() is None:  # loading in the main process: nothing to share
            return [part[local] for part, local in located]
        if self._ring is None:
            self._ring = BufferRing()
        layouts = [part.item_layout(local) for part, local in located]
        layout = dict(layouts[0])
        if len({lay["fmri"][1] for lay in layouts}) > 1:  # fp16 and float32 runs together
            layout["fmri"] = (layout["fmri"][0], torch.float32)
        slot, views = self._ring.take(len(located), layout)
        items = []
        for k, (part, local) in enumerate(located):
            item = part.__getitem__(local, out=views["fmri"][k].numpy())
            for name in layout:
                if name != "fmri":
                    views[name][k] = item[name]
            items.append(item)
        stamp = self._ring.done(slot)
        return _InRing(items, views, self._ring.stamps, slot, stamp)


class _InRing(list):
    """Items whose clips and masks already sit, in order, in one ring buffer."""

    def __init__(self, items, in_buffer: dict, stamps, slot, stamp):
        super().__init__(items)
        self.in_buffer, self.stamps, self.slot, self.stamp = in_buffer, stamps, slot, stamp


def collate_clips(items):
    """The DataLoader's collate: a batch read into a ring buffer keeps it (no copy); otherwise
    torch's default, with clips of fp16 and float32 runs together made float32."""
    if isinstance(items, _InRing):
        rest = default_collate([{k: v for k, v in item.items() if k not in items.in_buffer}
                                for item in items])
        return StoredBatch({**items.in_buffer, **rest}, items.stamps, items.slot, items.stamp)
    if len({item["fmri"].dtype for item in items}) > 1:
        items = [{**item, "fmri": item["fmri"].to(torch.float32)} for item in items]
    return default_collate(items)
