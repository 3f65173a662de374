"""Shared by every process: audio constants, settings, wire format, Redis keys.

Nothing here imports from ``gateway`` or ``mixer``.
"""
