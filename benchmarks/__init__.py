"""Benchmarks for faas: `python -m benchmarks <scenario>` (see benchmarks/README.md).

The harness starts its own faas server on loopback with a fresh data dir, and drives load from a separate
process (`benchmarks.loadgen`) so that the generator and the server do not share an event loop.
"""
