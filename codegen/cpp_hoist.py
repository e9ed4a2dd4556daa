"""Which declarations of a generated C++ loop body can run once before its loops: g++ may not
move a call or a load out of a loop itself, and one left inside can keep the loop scalar (layer
norm's 1/sqrt(var + eps), a cross-entropy gradient's per-row target). Works on the body's
text, line by line, as codegen/cpp.py emits it."""
from __future__ import annotations

import re

_DECLARATION = re.compile(r"^[A-Za-z_][\w:<>]* (\w+) = (.*);$")
_ASSIGNED = re.compile(r"\b([A-Za-z_]\w*)\s*(?:[-+*/|&^]?=)(?!=)")
_NAME = re.compile(r"[A-Za-z_]\w*")
_LOAD = re.compile(r"\b(\w+)\[")
_STORE = re.compile(r"\b(\w+)\[[^\]]*\]\s*=(?!=)")


def hoisted(body: list[str], loop_vars, surely_runs: bool = False
            ) -> tuple[list[str], list[str]]:
    """(declarations that can run once before the loops, the rest of the body). A declaration
    stays if it names a loop variable, a variable assigned in the loop or declared by a line
    that stays, or runs a bounds check; and, unless the loops surely run (a loop that runs zero
    times must neither read nor flag anything), if it reads memory the loop stores to or
    touches the error flag. So a cross-entropy gradient's per-row target and log-sum, and an
    embedding row's index (lt::wrap_index, which flags an index out of range), move out of
    the loops they kept scalar."""
    varying = {str(v) for v in loop_vars}
    stored = set()
    for line in body:
        if not _DECLARATION.match(line):
            varying.update(m.group(1) for m in _ASSIGNED.finditer(line.replace("==", " ")))
            stored.update(_STORE.findall(line))
    before, rest = [], []
    for line in body:
        found = _DECLARATION.match(line)
        reads = set(_LOAD.findall(line))
        may_move = surely_runs or ("err" not in line and not reads)
        if found and may_move and "lt::checked" not in line and not reads & stored and \
                not (set(_NAME.findall(found.group(2))) & varying) and found.group(1) not in varying:
            before.append(line)
        else:
            rest.append(line)
            if found:
                varying.add(found.group(1))
    return before, rest
