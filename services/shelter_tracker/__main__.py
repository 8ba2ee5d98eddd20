"""``python -m services.shelter_tracker``: run the tracker with the ``SONAE_*`` settings."""

from __future__ import annotations

from infra.logs import configure_logging
from infra.settings import load_settings
from services.shelter_tracker.main import main

if __name__ == "__main__":
    settings = load_settings()
    configure_logging(settings)
    main(settings)
