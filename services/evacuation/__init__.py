"""Evacuation decision: rules over hazards, reports and shelters -> recommendations -> orders.

- :mod:`~services.evacuation.rules`: the rules as data (a region pack's ``rules.toml``);
- :mod:`~services.evacuation.engine`: the pure engine, ``step(config, state, event)``;
- :mod:`~services.evacuation.app`: the faust app around it (one ordered input log);
- :mod:`~services.evacuation.main`: the process entry point.

See docs/evacuation-decision.md.
"""
