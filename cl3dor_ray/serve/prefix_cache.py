"""The scene prefix cache of a model replica: an LRU of `ScenePrefix`es, bounded by bytes.

A question about a prepared scene shares everything up to its instruction with every other question
about that scene: the system text and the object tokens, which are most of the prompt (60 objects
against a dozen words) and, with a pretrained LLM, most of the compute. The replica keeps the LM's
key/value cache of that prefix per key (model version, scene, the batch's object order, and the
agent's pose for a situated question, which moves the boxes) and runs only the instruction and the
answer. Uploaded objects bypass it: they are one-off.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable

from cl3dor_ray.model.scene3dlm import ScenePrefix


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    entries: int = 0
    bytes: int = 0


class PrefixCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, ScenePrefix] = OrderedDict()
        self.stats = CacheStats()
        self._lock = threading.Lock()  # generation and scoring batches run in worker threads side by side

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def get(self, key: Hashable) -> ScenePrefix | None:
        with self._lock:
            return self._get(key)

    def _get(self, key: Hashable) -> ScenePrefix | None:
        prefix = self._items.get(key)
        if prefix is None:
            self.stats.misses += 1
            return None
        self._items.move_to_end(key)
        self.stats.hits += 1
        return prefix

    def put(self, key: Hashable, prefix: ScenePrefix) -> None:
        """Keep it, evicting the least recently used until it fits; one larger than the whole cache is
        used for its batch and not kept."""
        with self._lock:
            self._put(key, prefix)

    def _put(self, key: Hashable, prefix: ScenePrefix) -> None:
        if key in self._items or prefix.nbytes > self.max_bytes:
            return
        while self.stats.bytes + prefix.nbytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.stats.bytes -= old.nbytes
            self.stats.evictions += 1
            self.stats.entries = len(self._items)
        self._items[key] = prefix
        self.stats.bytes += prefix.nbytes
        self.stats.entries = len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.stats.bytes = self.stats.entries = 0
