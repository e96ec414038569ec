"""Classification requests, batched: those that arrive while one batch waits for the engine
thread join it, and the whole batch is classified in one ``Generator.classify`` call (per set
of zero-shot options) between two decoding steps."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from .engine import Engine


class ClassifyBatcher:
    def __init__(self, engine: Engine, generator, max_texts: int = 256):
        self.engine, self.gen, self.max_texts = engine, generator, max_texts
        self._pending: list[tuple[list[str], dict, Future]] = []
        self._lock = threading.Lock()

    def submit(self, texts: list[str], options: dict) -> Future:
        """Classify ``texts`` (with ``Generator.classify``'s zero-shot ``options``); a Future of
        their Classifications."""
        future: Future = Future()
        with self._lock:
            self._pending.append((texts, options, future))
            first = len(self._pending) == 1
        if first:  # later requests join this batch until the engine thread takes it
            self.engine.call(self._run)
        return future

    def _run(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        groups: dict[str, list[tuple[list[str], dict, Future]]] = {}
        for item in batch:
            groups.setdefault(repr(sorted(item[1].items())), []).append(item)
        for items in groups.values():
            texts = [t for ts, _, _ in items for t in ts]
            try:
                results = self.gen.classify(texts, batch_size=self.max_texts, **items[0][1])
            except Exception as e:  # noqa: BLE001 - the requests' futures get it
                for _, _, future in items:
                    future.set_exception(e)
                continue
            at = 0
            for ts, _, future in items:
                future.set_result(results[at : at + len(ts)])
                at += len(ts)
