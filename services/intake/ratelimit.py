"""Intake's per-token rate limit: the shared token bucket (:mod:`services.common.ratelimit`).

Kept under this name so intake's modules and tests import it where they always have.
"""

from __future__ import annotations

from services.common.ratelimit import RateLimiter, retry_after_seconds

__all__ = ["RateLimiter", "retry_after_seconds"]
