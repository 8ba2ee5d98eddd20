"""Shelter tracker: live shelter state, capacity and fuel alerts, area aggregates (faust).

``domain`` holds the pure rules, ``app`` the faust app around them, ``main``
the process entry point. See docs/shelter-tracker.md.
"""
