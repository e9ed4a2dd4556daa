"""The layout DESIGN.md names installs as one package: top-level codegen/ and templates/ become
lazytriton.codegen and lazytriton.templates (headers as package data). Checked on a real wheel,
imported and used from where it is unpacked."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# where each installed package's files come from in the source tree
SOURCE_DIRS = {"lazytriton": ROOT / "lazytriton", "lazytriton/codegen": ROOT / "codegen",
               "lazytriton/templates": ROOT / "templates"}


def _expected_files() -> set[str]:
    files = set()
    for installed, source in SOURCE_DIRS.items():
        for path in source.rglob("*"):
            if path.suffix in (".py", ".h", ".jinja") and "__pycache__" not in path.parts:
                files.add(f"{installed}/{path.relative_to(source).as_posix()}")
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # built from a copy: setuptools reuses a build/ folder, whose stale files would hide a miss
    source = tmp_path_factory.mktemp("source") / "lazytriton"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".*", "build", "dist", "*.egg-info", "__pycache__", "data", "tests", "benchmarks"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-q", str(source), "-w", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = out.glob("lazytriton-*.whl")
    return path


def test_wheel_holds_every_module_header_and_template(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_expected_files() - names)
    assert not missing, f"not in the wheel: {missing}"


def test_wheel_imports_and_builds_kernels_from_where_it_is_unpacked(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = (
        "import torch, lazytriton, lazytriton.codegen.cpp, lazytriton.templates as t\n"
        "for m in (lazytriton, lazytriton.codegen.cpp, t):\n"
        f"    assert m.__file__.startswith({str(site)!r}), m.__file__\n"
        f"lazytriton.init('cpp', cache_dir={str(tmp_path / 'cache')!r})\n"
        "x = torch.randn(3, 5)\n"
        "torch.testing.assert_close(torch.softmax(x.to('lazy'), 1).cpu(), torch.softmax(x, 1))\n"
        "assert lazytriton.metrics.counter_value('KernelCompile') == 1\n")
    # PYTHONPATH comes before the editable install's finder, so this imports the unpacked wheel
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
