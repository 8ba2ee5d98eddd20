"""The composition root: the ``sonae`` command, the stack, and the registry of services.

The only package that imports every service. ``infra`` stands below it (and
imports only ``schemas`` and libraries); each ``services/<name>`` imports
``schemas``, ``infra`` and ``services.common``, never another service.
``tests/unit/test_layout.py`` holds the code to these rules.
"""
