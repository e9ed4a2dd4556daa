"""What generated code is built from that is not Python: `cpp/` holds the headers every generated
C++ translation unit `#include`s (prelude.h, vecmath.h); `triton/` the Triton kernel templates.
Installed as `lazytriton.templates`, the files as package data."""
from pathlib import Path

CPP_INCLUDE_DIR = Path(__file__).parent / "cpp"
TRITON_TEMPLATE_DIR = Path(__file__).parent / "triton"
