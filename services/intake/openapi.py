"""The OpenAPI 3.1 document of the intake HTTP API, generated from the pydantic models.

Request and response schemas come from the same models the handlers validate
and answer with (:mod:`schemas.intake` and :mod:`services.intake.contract`), so
the document cannot drift from the code; ``GET /v1/openapi.json`` serves it.

The document is the region's: area, gauge and shelter ids are enumerated from the
region pack, a report's "location or area_id" rule and the fields intake sets itself
(``overridden_by``, read-only) are stated, so a client (or a fuzzer) generating from
the document produces what intake accepts. What JSON Schema cannot say (a CAP or JMA
body is XML valid against its own schemas) the operation's description says.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from schemas.intake import (
    AtHomeRequest,
    HazardObservationRequest,
    ReportRequest,
    ShelterStatusRequest,
    WelfareCheckRequest,
)
from schemas.region import Region
from services.intake.contract import Acknowledgement, ErrorBody, Health, Ignored, ReportView

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _json_body(name: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(name)}}}


def _errors(*codes: int) -> dict[str, Any]:
    words = {
        400: "Malformed body (not JSON, not UTF-8, duplicate keys, not well-formed XML).",
        401: "Missing, malformed, tampered or expired bearer token.",
        403: "The token's role may not do this.",
        404: "No such report or shelter.",
        409: "The client id was already used for a different body.",
        408: "The body was not received in time (SONAE_INTAKE_BODY_TIMEOUT_SECONDS).",
        413: "The body exceeds the size limit, or an XML document has more elements of a "
             "kind than allowed (each limit and count named in errors).",
        415: "Wrong Content-Type.",
        422: "Well-formed but invalid: every field error, with a JSON pointer.",
        429: "Rate limit of this token (or, without a valid token, of this address) "
             "exceeded; see Retry-After.",
        503: "Storage unavailable, or too many XML documents waiting to be parsed; retry "
             "(see Retry-After).",
    }
    return {str(c): {"description": words[c], **_json_body("ErrorBody")} for c in codes}


_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "A client-chosen id (1-64 of A-Z a-z 0-9 _ -). The same key with the same "
                   "body returns the original answer (200); with another body, 409.",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"},
}


def _string_enum(node: dict[str, Any], values: list[str]) -> None:
    """Narrow a string schema, or the string branch of a nullable one, to ``values``."""
    for branch in node.get("anyOf", [node]):
        if branch.get("type") == "string":
            branch["enum"] = values


def _refs(node: Any) -> list[str]:
    """The component names a schema node refers to."""
    if isinstance(node, dict):
        own = [node["$ref"].rsplit("/", 1)[-1]] if isinstance(node.get("$ref"), str) else []
        return own + [name for value in node.values() for name in _refs(value)]
    if isinstance(node, list):
        return [name for value in node for name in _refs(value)]
    return []


def _reachable(schemas: dict[str, Any], roots: list[str]) -> set[str]:
    """The component names ``roots`` refer to, directly or through other components."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += _refs(schemas[name])
    return seen


def _narrow_to_region(schemas: dict[str, Any], requests: list[str], region: Region) -> None:
    """State in the request schemas what intake checks against the region pack."""
    areas = sorted(d.id for d in region.districts)
    gauges = sorted(g.id for g in region.gauges)
    for name in _reachable(schemas, requests):
        properties = schemas[name].get("properties", {})
        if "area_id" in properties:
            _string_enum(properties["area_id"], areas)
        if "area_ids" in properties:
            _string_enum(properties["area_ids"]["items"], areas)
        if "gauge_id" in properties:
            _string_enum(properties["gauge_id"], gauges)
        for server_filled in ("overridden_by", "household_id", "via", "checked_by"):
            if server_filled in properties and not (
                    server_filled == "household_id" and name == "WelfareCheckRequest"):
                properties[server_filled]["readOnly"] = True
        if name.startswith("Shelter") and "shelter_id" in properties:
            properties["shelter_id"]["readOnly"] = True  # the URL names the shelter
    report = schemas["ReportRequest"]
    report["anyOf"] = [
        {"required": ["location"], "properties": {"location": _ref("GeoPoint")}},
        {"required": ["area_id"], "properties": {"area_id": {"type": "string",
                                                             "enum": areas}}},
    ]


@cache
def openapi_document(region: Region) -> dict[str, Any]:
    """The OpenAPI document for ``region`` (built once per process)."""
    requests: list[type[BaseModel]] = [ReportRequest, ShelterStatusRequest,
                                       HazardObservationRequest, AtHomeRequest,
                                       WelfareCheckRequest]
    responses: list[type[BaseModel]] = [Acknowledgement, ErrorBody, Health, Ignored,
                                        ReportView]
    inputs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((m, "validation") for m in requests), *((m, "serialization") for m in responses)]
    names, top = models_json_schema(inputs, ref_template=_REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    # Give each top-level model its class name (pydantic may suffix -Input/-Output).
    for model, mode in inputs:
        ref = names[(model, mode)]["$ref"].rsplit("/", 1)[-1]
        if ref != model.__name__:
            schemas[model.__name__] = schemas.pop(ref)
    _narrow_to_region(schemas, [m.__name__ for m in requests], region)
    shelter_ids = sorted(s.id for s in region.sites if s.takes_people)
    accepted = {
        "202": {"description": "Recorded durably (first receipt); events are in the outbox.",
                **_json_body("Acknowledgement")},
        "200": {"description": "An identical resend: the original answer, nothing new recorded.",
                **_json_body("Acknowledgement")},
    }
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sonae intake",
            "version": "1",
            "description": (
                "Field reports, shelter status, hazard observations, CAP alerts and JMA "
                "messages for the "
                "disaster HQ. Every input is written to a PostgreSQL outbox before it is "
                "acknowledged, then published to Kafka. Numbers and booleans are strict: "
                "an integer is written as a JSON integer (5, not 5.0 or \"5\"), a "
                "boolean as true or false. A seismic report lists each area at most once."
            ),
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
        },
        "paths": {
            "/v1/reports": {"post": {
                "summary": "Submit a damage report",
                "description": "Roles: field, shelter_staff, hq. The idempotency key is the "
                               "token subject and client_report_id. A body with a readable "
                               "client_report_id that fails validation is recorded as "
                               "rejected (422), and may be corrected and resent under the "
                               "same id.",
                "security": bearer,
                "requestBody": {"required": True, **_json_body("ReportRequest")},
                "responses": {**accepted,
                              **_errors(400, 401, 403, 408, 409, 413, 415, 422, 429, 503)},
            }},
            "/v1/reports/{id}": {"get": {
                "summary": "A report's outcome: accepted or rejected, and why",
                "description": "By report_id or client_report_id; a team sees its own "
                               "reports, hq sees all.",
                "security": bearer,
                "parameters": [{"name": "id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The report.", **_json_body("ReportView")},
                              **_errors(401, 403, 404, 409, 429, 503)},
            }},
            "/v1/shelters/{shelter_id}/status": {"post": {
                "summary": "Report a shelter's opening, closing, occupancy or needs",
                "description": "Roles: shelter_staff, hq.",
                "security": bearer,
                "parameters": [{"name": "shelter_id", "in": "path", "required": True,
                                "description": "A shelter (避難所) or stranded-commuter "
                                               "facility (一時滞在施設) of the region pack.",
                                "schema": {"type": "string", "enum": shelter_ids}},
                               _IDEMPOTENCY_KEY],
                "requestBody": {"required": True, **_json_body("ShelterStatusRequest")},
                "responses": {**accepted,
                              **_errors(400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503)},
            }},
            "/v1/hazards/observations": {"post": {
                "summary": "Submit a gauge reading, a warning or seismic intensities",
                "description": "Roles: sensor, hq.",
                "security": bearer,
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": {"required": True, **_json_body("HazardObservationRequest")},
                "responses": {**accepted,
                              **_errors(400, 401, 403, 408, 409, 413, 415, 422, 429, 503)},
            }},
            "/v1/cap": {"post": {
                "summary": "Ingest an external CAP 1.2 alert as hazard.warning events",
                "description": "Roles: sensor, hq. Validated against the OASIS CAP 1.2 schema; "
                               "one warning per info block in one language that names an area "
                               "of the region. The sender and identifier are the idempotency "
                               "key.",
                "security": bearer,
                "requestBody": {"required": True, "content": {
                    media: {"schema": {"type": "string"}}
                    for media in ("application/cap+xml", "application/xml", "text/xml")}},
                "responses": {**accepted,
                              **_errors(400, 401, 403, 408, 409, 413, 415, 422, 429, 503)},
            }},
            "/v1/jma": {"post": {
                "summary": "Ingest a 気象庁防災情報XML message as hazard.warning / "
                           "hazard.seismic_intensity events",
                "description": "Roles: sensor, hq. Parsed safely (no DTDs or entities, size and "
                               "element limits) and validated against JMA's schemas; mapped by "
                               "the region pack's JMA code table (docs/jma.md). The message's "
                               "identity (office, type, EventID, ReportDateTime, Serial, "
                               "InfoType) is the idempotency key, whoever sends it. 訓練 and 試験 "
                               "become exercise events; 取消 cancels, 訂正 corrects. A message "
                               "about no area of the region is answered 200 'ignored'.",
                "security": bearer,
                "requestBody": {"required": True, "content": {
                    media: {"schema": {"type": "string"}}
                    for media in ("application/xml", "text/xml")}},
                "responses": {
                    **accepted,
                    "200": {"description": "An identical resend (the original answer, nothing "
                                           "new recorded), or a message about nothing of the "
                                           "region (Ignored: the reason, nothing recorded).",
                            "content": {"application/json": {"schema": {"oneOf": [
                                _ref("Acknowledgement"), _ref("Ignored")]}}}},
                    **_errors(400, 401, 403, 408, 409, 413, 415, 422, 429, 503)},
            }},
            "/v1/people/at-home": {"post": {
                "summary": "Report a household sheltering at home (在宅避難)",
                "description": "Roles: field, hq — or no token at all: the residents' form "
                               "(via public; the client address's rate limit; a body of at "
                               "most 16 KiB; client_id a UUID; no exercise flag, no "
                               "reporter). The household id derives from the sender and "
                               "client_id: an identical resend replays the answer (200), "
                               "another body under the same client_id replaces the report "
                               "(202, a new event).",
                "security": [*bearer, {}],
                "requestBody": {"required": True, **_json_body("AtHomeRequest")},
                "responses": {**accepted,
                              **_errors(400, 401, 403, 408, 413, 415, 422, 429, 503)},
            }},
            "/v1/people/welfare-checks": {"post": {
                "summary": "Record a welfare-check visit to a household at home (安否確認)",
                "description": "Roles: field (in its token's areas), hq. The household must "
                               "have been reported at home (404 unknown_household) in the "
                               "area named (422 /area_id). The idempotency key is the token "
                               "subject and client_id.",
                "security": bearer,
                "requestBody": {"required": True, **_json_body("WelfareCheckRequest")},
                "responses": {**accepted,
                              **_errors(400, 401, 403, 404, 408, 409, 413, 415, 422, 429,
                                        503)},
            }},
            "/healthz": {"get": {
                "summary": "Health: healthy while the database answers (the broker may be "
                           "down: intake still accepts); the reason is logged, not returned",
                "responses": {"200": {"description": "Healthy.", **_json_body("Health")},
                              "503": {"description": "Unhealthy (database unreachable).",
                                      **_json_body("Health")},
                              **_errors(429)},
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics (text exposition format)",
                "responses": {"200": {"description": "Metrics.",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}},
                              **_errors(429)},
            }},
            "/v1/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1."}, **_errors(429)},
            }},
        },
    }
