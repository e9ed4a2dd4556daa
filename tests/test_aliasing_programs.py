"""Random programs of views and in-place ops, run on CPU and on the lazy device step by step:
every tensor they made must agree at the end, and an op must fail on the lazy device exactly
when it fails in eager (overlapping writes), leaving the tensors usable. Each program is made
from its seed, so a failure names the seed and the program, and reruns the same way."""
from __future__ import annotations

import random

import pytest
import torch

import lazytriton

N_PROGRAMS = 60


def _views(t: torch.Tensor, rng: random.Random) -> list[tuple[str, callable]]:
    """View ops that apply to a tensor of t's shape and layout."""
    ops = [("unsqueeze(0)", lambda u: u.unsqueeze(0)), ("detach()", lambda u: u.detach())]
    if t.dim() >= 1:
        ops.append(("expand", lambda u: u.unsqueeze(0).expand(3, *u.shape)))
    if t.dim() >= 1 and t.shape[0] > 1:
        a = rng.randrange(t.shape[0])
        b = rng.randrange(a + 1, t.shape[0] + 1)
        ops += [(f"[{a}:{b}]", lambda u: u[a:b]), (f"[{a}]", lambda u: u[a]),
                ("[::2]", lambda u: u[::2])]
    if t.dim() >= 2:
        ops += [("t()", lambda u: u.transpose(0, 1)), ("diagonal()", lambda u: u.diagonal())]
        if t.shape[1] > 1:
            ops.append(("[:, 1:]", lambda u: u[:, 1:]))
    if t.is_contiguous() and t.numel() > 0:
        ops.append(("view(-1)", lambda u: u.view(-1)))
        if t.numel() % 2 == 0:
            ops.append(("view(2, -1)", lambda u: u.view(2, -1)))
    return ops


def _in_place(rng: random.Random) -> tuple[str, callable, bool]:
    """(name, fn(target, source), whether it reads the source)."""
    c = round(rng.uniform(-2, 2), 2)
    return rng.choice([
        (f"add_(s, alpha={c})", lambda t, s: t.add_(s, alpha=c), True),
        ("mul_(s)", lambda t, s: t.mul_(s), True),
        ("copy_(s)", lambda t, s: t.copy_(s), True),
        ("addcmul_(s, s)", lambda t, s: t.addcmul_(s, s, value=c), True),
        ("lerp_(s, 0.3)", lambda t, s: t.lerp_(s, 0.3), True),
        (f"fill_({c})", lambda t, s: t.fill_(c), False),
        ("zero_()", lambda t, s: t.zero_(), False),
        ("clamp_", lambda t, s: t.clamp_(-abs(c), abs(c) + 0.1), False),
        ("neg_()", lambda t, s: t.neg_(), False),
        (f"sub_({c})", lambda t, s: t.sub_(c), False),
    ])


def _attempt(fn, *args) -> str | None:
    try:
        fn(*args)
    except RuntimeError as e:
        return str(e)
    return None


def _run_program(seed: int) -> None:
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    starts = [torch.randn(4, 6, generator=g), torch.randn(6, 4, generator=g),
              torch.randn(24, generator=g)]
    eager, lazy = [t.clone() for t in starts], [t.clone().to("lazy") for t in starts]
    program = []
    for _ in range(rng.randrange(3, 14)):
        i = rng.randrange(len(eager))
        if rng.random() < 0.5:
            name, view = rng.choice(_views(eager[i], rng))
            eager.append(view(eager[i]))
            lazy.append(view(lazy[i]))
            program.append(f"t{len(eager) - 1} = t{i}{'.' if name[0] != '[' else ''}{name}")
        else:
            name, fn, reads = _in_place(rng)
            j = rng.choice([k for k, e in enumerate(eager) if e.shape == eager[i].shape])
            program.append(f"t{i}.{name}" + (f" with s = t{j}" if reads else ""))
            failed = _attempt(fn, eager[i], eager[j]), _attempt(fn, lazy[i], lazy[j])
            assert failed[0] == failed[1], f"seed {seed}: {'; '.join(program)}"
        if rng.random() < 0.15:
            lazytriton.mark_step()
            program.append("mark_step()")
    lazytriton.mark_step()
    for k, (e, t) in enumerate(zip(eager, lazy)):
        torch.testing.assert_close(t.cpu(), e, msg=lambda m: f"seed {seed}, t{k}: {m}\n"
                                   f"program: {'; '.join(program)}")


@pytest.mark.differential
@pytest.mark.parametrize("seed", range(N_PROGRAMS))
def test_random_program_matches_eager(test_backend, seed):
    _run_program(seed)
