"""Code generators: shared printers and kernel bodies (common.py), C++/OpenMP (cpp.py), the
generated Python wrapper (wrapper.py)."""
