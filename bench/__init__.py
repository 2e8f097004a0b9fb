"""pytest-benchmark suite for fastrnn (a package so that its conftest.py is
``bench.conftest`` and never collides with tests/conftest.py)."""
