"""Triton kernel templates (package data) that the code generator fills in."""
