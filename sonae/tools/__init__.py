"""Maintainers' tools that need more than one service (run by hand)."""
