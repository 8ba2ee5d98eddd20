"""``python -m services.shelter_tracker``: run the tracker with the ``SONAE_*`` settings."""

from __future__ import annotations

import logging
import sys

from infra.settings import load_settings
from services.shelter_tracker.main import main

if __name__ == "__main__":
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(settings)
