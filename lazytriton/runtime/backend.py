"""The interface every backend implements, and the registry `init(backend=...)` chooses from.

A backend turns a captured Graph into a CompiledGraph: a callable taking the graph's inputs
(device tensors for DataNode leaves, Python numbers for ScalarNode leaves, in `graph.inputs`
order) and returning one tensor per `graph.outputs`, laid out as the output's TensorMeta says.
The reference executor (`aten`) is the simplest such backend and the oracle for the others.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from ..graph import Graph, to_text


class CompiledGraph(Protocol):
    # graph input index -> the scalar value the program was specialized to (a decomposition
    # computed with it); the graph cache reuses the program only where these hold
    guards: dict[int, Any]

    def __call__(self, inputs: list[Any]) -> list[torch.Tensor]: ...


class Backend(ABC):
    name: str
    device: torch.device  # where the lazy device's data lives
    device_types: tuple[str, ...] = ("cpu",)  # where it can keep it
    variant: str = ""  # a mode that changes the generated code (cpp: "bounds")

    @property
    def artifact_name(self) -> str:
        """What the cache's graph folders are named and keyed by: the backend and its mode,
        so a bounds-checked build never shares a folder with the plain one."""
        return f"{self.name}-{self.variant}" if self.variant else self.name

    @classmethod
    def is_available(cls) -> bool:
        return True

    @classmethod
    def default_device(cls) -> torch.device:
        return torch.device("cuda" if "cuda" in cls.device_types and torch.cuda.is_available()
                            else "cpu")

    @classmethod
    def pick_device(cls, device: str | torch.device | None) -> torch.device:
        """The device asked for (None: the default), or a ValueError saying why not."""
        if device is None:
            return cls.default_device()
        device = torch.device(device)
        if device.type not in cls.device_types:
            raise ValueError(f"lazytriton backend {cls.name!r} keeps data on "
                             f"{' or '.join(cls.device_types)}, not {device.type!r}")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} asked for, but torch sees no CUDA device "
                             f"(torch {torch.__version__})")
        return device

    @classmethod
    def unavailable_reason(cls) -> str:
        return "not available on this machine"

    @classmethod
    def interpreted(cls) -> bool:
        """Whether its kernels would run under an interpreter here (correct, but far too slow
        to time or to train with)."""
        return False

    @classmethod
    def chosen_by_auto(cls) -> bool:
        """Whether "auto" may pick it (when available)."""
        return cls.is_available() and not cls.interpreted()

    # whether compile() takes size symbols (runtime/shapes.py: automatic dynamic shapes)
    dynamic_shapes = False

    @abstractmethod
    def compile(self, graph: Graph, artifacts: Path, donate: tuple = ()) -> CompiledGraph:
        """Compile `graph`; `artifacts` is the graph's folder in the cache, for readable output.
        A backend with `dynamic_shapes` takes `symbols` ((input, dim) -> size symbol) too, and
        its program carries a `fingerprint` (see `fingerprint`).
        `donate`: (input, output) index pairs whose input buffer is dead after the step, so
        the output may be written into it; a backend may ignore any of them. The program's
        `donated` (default none) says which outputs are returned in their input's buffer."""

    def fingerprint(self, graph: Graph, symbols: dict) -> str | None:
        """Everything the program compiled from `graph` with `symbols` would run, with
        buffer names normalized: equal for two graphs exactly when one program serves both."""
        return None

    def source(self, graph: Graph) -> str:
        """What this backend would run for `graph`, as text (debug.dump_ir "backend")."""
        return to_text(graph)


_registry: dict[str, Callable[..., Backend]] = {}
# "auto" takes the first of these that says so (triton: only with CUDA)
_PREFERENCE = ("triton", "cpp", "aten")


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    _registry[name] = factory


def available_backends(interpreted: bool = True) -> list[str]:
    """The backends this machine can run; `interpreted=False` leaves out those whose kernels
    would run under an interpreter (Triton without a GPU)."""
    return [name for name, factory in _registry.items()
            if getattr(factory, "is_available", lambda: True)()
            and (interpreted or not getattr(factory, "interpreted", lambda: False)())]


def create_backend(name: str | None, device: str | torch.device | None = None) -> Backend:
    """The backend `name` ("auto": the first of _PREFERENCE that says so and can hold data on
    `device`), keeping its data on `device` (None: the backend's default)."""
    name = (name or "auto").lower()
    available = available_backends()
    if name == "auto":
        name = next(n for n in _PREFERENCE if n in _registry and _registry[n].chosen_by_auto()
                    and (device is None or torch.device(device).type in _registry[n].device_types))
    if name not in _registry:
        raise ValueError(f"unknown lazytriton backend {name!r}; choose one of "
                         f"{['auto'] + sorted(_registry)}")
    if name not in available:
        raise RuntimeError(f"lazytriton backend {name!r}: {_registry[name].unavailable_reason()} "
                           f"(available: {available})")
    return _registry[name](_registry[name].pick_device(device))
