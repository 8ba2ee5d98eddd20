"""Drills: record an event log, replay it into an isolated namespace, report on it.

See docs/drills.md. Modules: :mod:`.logformat` (the versioned JSONL format),
:mod:`.record` (event store → log), :mod:`.replay` (the pure timing and
rewriting core, and the producer around it), :mod:`.hq` (recorded HQ commands
matched to the replayed run's recommendations), :mod:`.watch` (what the drill
namespace's services have done so far), :mod:`.report` (after-action report),
:mod:`.verify` (determinism check), :mod:`.services` (the services of a drill
namespace), :mod:`.cli` (``sonae drill``), :mod:`.demo` (the demo scenario for
``sonae up --demo``).
"""
