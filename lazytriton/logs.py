"""LAZYTRITON_LOGS: what lazytriton says as it works, by topic, comma-separated
(`LAZYTRITON_LOGS=output_code,recompiles`; `all` for every topic):

    output_code  each new graph's folder and kernel files, as it is compiled
    recompiles   why a graph was compiled again: which input, op, shape or guard differs from
                 the nearest graph compiled before in this process
    autotune     each tuned kernel's choice (timed, read from a record, or the heuristic), the
                 candidates' times, and candidates that failed

Messages go to the `lazytriton.<topic>` logger, which prints them on stderr when the topic is
on (the variable is read at each message, so it can be set after import).
"""
from __future__ import annotations

import functools
import logging
import os
import sys
import warnings

TOPICS: dict[str, str] = {
    "output_code": "each new graph's folder and kernel files, as it is compiled",
    "recompiles": "why a graph was compiled again: what differs from the nearest graph "
                  "compiled before in this process",
    "autotune": "each tuned kernel's choice and how it was made, candidates' times and "
                "failures",
}


def enabled(topic: str) -> bool:
    return topic in _topics(os.environ.get("LAZYTRITON_LOGS", ""))


@functools.lru_cache(maxsize=8)
def _topics(value: str) -> frozenset[str]:
    names = {n.strip() for n in value.split(",") if n.strip()}
    if "all" in names:
        names = (names - {"all"}) | set(TOPICS)
    unknown = sorted(names - set(TOPICS))
    if unknown:
        warnings.warn(f"LAZYTRITON_LOGS: unknown topic {', '.join(unknown)}; the topics are "
                      f"{', '.join(TOPICS)} and all", RuntimeWarning, stacklevel=4)
    return frozenset(names & set(TOPICS))


class _Stderr(logging.Handler):
    """Writes to whatever sys.stderr is at the time (pytest and notebooks swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 -- logging must never break a compile
            self.handleError(record)


_root = logging.getLogger("lazytriton")


def emit(topic: str, message: str) -> None:
    """Log `message` under `topic` if LAZYTRITON_LOGS names it."""
    if not enabled(topic):
        return
    if not any(isinstance(h, _Stderr) for h in _root.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("[lazytriton %(topic)s] %(message)s"))
        _root.addHandler(handler)
        _root.setLevel(logging.INFO)
        _root.propagate = False  # printed once, not again by a root handler
    logging.getLogger(f"lazytriton.{topic}").info(message, extra={"topic": topic})


def strict() -> bool:
    """LAZYTRITON_STRICT=1 (tests): a graph the backend cannot compile, or a kernel variant
    that cannot be written, raises rather than falling back; unset, empty or 0: it falls back."""
    return os.environ.get("LAZYTRITON_STRICT", "") not in ("", "0")
