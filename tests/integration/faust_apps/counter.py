"""A faust worker for the table-recovery test: applies updates to a table, reports on request.

Run by the test as ``python -m faust -A tests.integration.faust_apps.counter worker
--without-web -l warn`` with the ``SONAE_*`` settings and:

- ``COUNTER_APP_ID``: faust app id (the table's changelog is ``<id>-values-changelog``);
- ``COUNTER_UPDATES``: topic of JSON records ``{"set": {key: value, ...}}`` or
  ``{"probe": name}``; a probe makes the worker write ``COUNTER_REPORTS/<name>.json``
  with the whole table. Agents run only after table recovery, so a probe sent after
  a restart reports exactly what recovery restored;
- ``COUNTER_PINGS`` / ``COUNTER_PONGS``: raw records forwarded unchanged, to time a hop;
- ``COUNTER_DATADIR``: faust's data directory;
- ``COUNTER_FETCH_WAIT_MS``, ``COUNTER_END_OFFSETS`` (``highwater`` or
  ``list_offsets``): the layer's fetch wait and end-offset fix, so the test can
  run faust's own behaviour for comparison.

One update record sets several keys in one go, so their changelog records share
the newest producer batch: the batch whose tail ListOffsets leaves out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from faust.types import StreamT

from infra.kafka.compat import TansuCompat, make_app
from infra.settings import load_settings

_env = os.environ
_reports = Path(_env["COUNTER_REPORTS"])

app = make_app(
    _env["COUNTER_APP_ID"],
    load_settings(),
    compat=TansuCompat(
        fetch_max_wait_ms=int(_env["COUNTER_FETCH_WAIT_MS"]),
        end_offsets_from_highwater=_env["COUNTER_END_OFFSETS"] == "highwater",
    ),
    datadir=_env["COUNTER_DATADIR"],
    topic_partitions=1,
    # Commit soon after processing, so a SIGKILL cannot make the restarted worker
    # reprocess updates and hide what recovery missed.
    broker_commit_interval=0.2,
    # Batch changelog records as a busy worker does, so the changelog usually ends in
    # a batch of many records (the test tops it up when it does not).
    producer_linger=0.05,
)
updates = app.topic(_env["COUNTER_UPDATES"], value_serializer="json", partitions=1)
pings = app.topic(_env["COUNTER_PINGS"], value_serializer="raw", partitions=1)
pongs = app.topic(_env["COUNTER_PONGS"], value_serializer="raw", partitions=1)
values = app.Table("values", default=int, partitions=1)


def _write_report(name: str) -> None:
    body = json.dumps({"probe": name, "values": dict(values.items())})
    tmp = _reports / f".{name}.tmp"
    tmp.write_text(body)
    tmp.replace(_reports / f"{name}.json")  # the test never sees a half-written report


@app.agent(updates)
async def apply(stream: StreamT[dict[str, Any]]) -> None:
    async for event in stream:
        if "probe" in event:
            _write_report(str(event["probe"]))
            continue
        for key, value in event["set"].items():
            values[key] = value


@app.agent(pings)
async def forward(stream: StreamT[bytes]) -> None:
    async for value in stream:
        await pongs.send(value=value)
