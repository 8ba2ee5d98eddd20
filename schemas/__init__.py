"""Sonae's event contracts.

- :mod:`schemas.events`: the ``Event`` union, ``decode_event``, ``encode_event``
- :mod:`schemas.envelope`: ``Envelope``, ``new_event``, ``derive_id``
- :mod:`schemas.reports`, :mod:`schemas.shelters`, :mod:`schemas.hazards`,
  :mod:`schemas.evacuation`, :mod:`schemas.broadcasts`: the event models
- :mod:`schemas.topics`: the topic catalogue and routing
- :mod:`schemas.upcasting`: upcasters for older schema versions
- :mod:`schemas.deadletter`: the dead-letter record
- :mod:`schemas.errors`: ``SchemaError`` and its subclasses
- :mod:`schemas.examples`: one example of every event type
- :mod:`schemas.generate`: ``python -m schemas.generate [--check]``
- :mod:`schemas.region`: the region pack

Nothing is imported here, so importing one module (say the region pack) does
not build the event union's validator.
"""
