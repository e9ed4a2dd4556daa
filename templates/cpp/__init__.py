"""C++ headers of generated kernels (package data; `-I` points here when a kernel is built)."""
