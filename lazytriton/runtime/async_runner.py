"""One worker thread executes graphs in submission order, so tracing the next step overlaps
running this one. Order is all the synchronization graphs need: a graph's inputs come from
graphs submitted before it."""
from __future__ import annotations

import queue
import threading
from typing import Callable


class AsyncRunner:
    def __init__(self):
        self._queue: queue.Queue[Callable[[], None]] = queue.Queue()
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._loop, name="lazytriton-exec", daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        self._queue.put(job)

    def wait(self) -> None:
        """Block until every submitted job ran; re-raise the first error of an async closure."""
        self._queue.join()
        if self._errors:
            error, self._errors = self._errors[0], []
            raise error

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            try:
                job()
            except BaseException as e:  # graph errors go to their outputs; this is a closure's
                self._errors.append(e)
            finally:
                self._queue.task_done()
