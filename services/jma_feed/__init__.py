"""The JMA feed poller: follows 気象庁防災情報XML Atom feeds and hands each new message to intake.

- :mod:`services.jma_feed.feed` — the Atom document as entries (pure);
- :mod:`services.jma_feed.store` — what was fetched, and each feed's validators (PostgreSQL);
- :mod:`services.jma_feed.poller` — polite polling: conditional GET, interval with
  jitter, bounded backoff, each entry once, refusals dead-lettered;
- :mod:`services.jma_feed.main` — the process (``sonae service run jma-feed``).

Messages go to intake's ``POST /v1/jma`` with a sensor token, so a polled message
takes exactly the path of a pushed one: one parser, one outbox, one idempotency
key (the message's identity). See docs/jma.md.
"""
