"""``python -m services.evacuation``: run the decision service with settings from SONAE_*."""

from __future__ import annotations

import sys

from infra.logs import configure_logging
from infra.settings import SettingsError, load_settings
from services.evacuation.main import main

if __name__ == "__main__":
    try:
        settings = load_settings()
    except SettingsError as e:
        sys.exit(str(e))
    configure_logging(settings)
    main(settings)
