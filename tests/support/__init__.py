"""Helpers the tests share (and the benchmarks in bench/ import): fuzz rigs, and what
tests/conftest.py's fixtures are built from."""
