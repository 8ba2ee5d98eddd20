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

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from schemas.intake import (
    AtHomeRequest,
    GeneratorRegisterRequest,
    GeneratorStatusRequest,
    HazardObservationRequest,
    HouseholdCheckInRequest,
    HouseholdCheckOutRequest,
    HouseholdTransferRequest,
    ReportRequest,
    ShelterStatusRequest,
    SupplyRequestRequest,
    SupplyStepRequest,
    WelfareCheckRequest,
)
from schemas.people import HouseholdCode
from schemas.region import Region
from schemas.supplies import SupplyRequestStatus
from services.intake.contract import (
    Acknowledgement,
    ErrorBody,
    Health,
    HouseholdList,
    Ignored,
    ReportView,
    SupplyRequestList,
)
from services.intake.households import accepts_households
from services.intake.supplies import Step

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
        403: "The token's role may not do this (site_not_permitted: not at this site).",
        404: "No such report, shelter, household (unknown_household: no household with that "
             "code is checked in at this shelter), supply request (unknown_request) or "
             "generator (unknown_generator).",
        409: "The client id was already used for a different body (conflict); "
             "household_checked_in: the household code is checked in already; for a supply "
             "request's step, a step its status does not allow (transition_refused, naming "
             "both statuses).",
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
        if name.startswith(("Shelter", "Household")) and "shelter_id" in properties:
            properties["shelter_id"]["readOnly"] = True  # the URL names the shelter
        if name == "HouseholdCheckOutRequest":
            properties["household_code"]["readOnly"] = True  # the URL names the household
        for set_by_a_transfer in ("transferred_from", "transferred_to"):
            if name.startswith("Household") and set_by_a_transfer in properties:
                properties[set_by_a_transfer]["readOnly"] = True
        if name == "HouseholdTransferRequest":
            properties["to"]["enum"] = sorted(s.id for s in region.sites
                                              if accepts_households(s))
        if name == "GeneratorStatusRequest":
            properties["generator_id"]["readOnly"] = True  # the URL names the generator
        if name == "GeneratorRegisterRequest":
            _string_enum(properties["site_id"], sorted(s.id for s in region.sites))
    # One body model for every step; the document states the assign rule per operation.
    step = schemas.pop("SupplyStepRequest")
    assignee = step["properties"]["assignee"]
    named = {**assignee["anyOf"][0], "description": assignee.get("description", "")}
    schemas["SupplyAssignRequest"] = {
        **step, "title": "SupplyAssignRequest",
        "required": sorted({*step.get("required", ()), "assignee"}),
        "properties": {**step["properties"], "assignee": named}}
    schemas["SupplyStepRequest"] = {
        **step, "properties": {k: v for k, v in step["properties"].items()
                               if k != "assignee"}}
    report = schemas["ReportRequest"]
    report["anyOf"] = [
        {"required": ["location"], "properties": {"location": _ref("GeoPoint")}},
        {"required": ["area_id"], "properties": {"area_id": {"type": "string",
                                                             "enum": areas}}},
    ]


_STEP_ROLES = {Step.ASSIGN: "hq", Step.DISPATCH: "hq",
               Step.RECEIVE: "hq; shelter_staff of the requesting site",
               Step.CANCEL: "hq; shelter_staff of the requesting site"}


@cache
def openapi_document(region: Region) -> dict[str, Any]:
    """The OpenAPI document for ``region`` (built once per process)."""
    requests: list[type[BaseModel]] = [ReportRequest, ShelterStatusRequest,
                                       HazardObservationRequest, HouseholdCheckInRequest,
                                       HouseholdCheckOutRequest, HouseholdTransferRequest,
                                       SupplyRequestRequest, SupplyStepRequest,
                                       GeneratorRegisterRequest, GeneratorStatusRequest,
                                       AtHomeRequest, WelfareCheckRequest]
    responses: list[type[BaseModel]] = [Acknowledgement, ErrorBody, Health, Ignored,
                                        ReportView, SupplyRequestList, HouseholdList]
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
    household_sites = sorted(s.id for s in region.sites if accepts_households(s))
    household_site = {"name": "shelter_id", "in": "path", "required": True,
                      "description": "A site of the region pack that takes households "
                                     "(a shelter, 避難所).",
                      "schema": {"type": "string", "enum": household_sites}}
    household_code = {"name": "code", "in": "path", "required": True,
                      "description": "The household code given at check-in (read as typed: "
                                     "lower case, O for 0, I or L for 1 are accepted).",
                      "schema": TypeAdapter(HouseholdCode).json_schema()}
    households_who = (
        "Roles: shelter_staff (at the sites of its token's shelters claim, else of its "
        "areas), hq. The idempotency key is the token subject and client_id: a resend is "
        "the first answer (200), whatever the household did since.")
    household_errors = _errors(400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sonae intake",
            "version": "1",
            "description": (
                "Field reports, shelter status, households at shelters, hazard "
                "observations, CAP alerts, JMA messages, supply requests and community "
                "generators for the "
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
            "/v1/shelters/{shelter_id}/households": {"get": {
                "summary": "The households checked in at a shelter now",
                "description": households_who + " Newest check-in first. Personal data "
                               "(name, contact): answered with Cache-Control: no-store.",
                "security": bearer,
                "parameters": [household_site],
                "responses": {
                    "200": {"description": "The households checked in there.",
                            "headers": {"Cache-Control": {"schema": {"type": "string",
                                                                     "enum": ["no-store"]}}},
                            **_json_body("HouseholdList")},
                    **_errors(401, 403, 404, 429, 503)},
            }, "post": {
                "summary": "Check a household in at a shelter",
                "description": households_who + " Without household_code, intake derives "
                               "one from client_id. Refused: a code checked in already "
                               "(409 household_checked_in); occurred_at before the "
                               "household's last check-out (422).",
                "security": bearer,
                "parameters": [household_site],
                "requestBody": {"required": True, **_json_body("HouseholdCheckInRequest")},
                "responses": {
                    "201": {"description": "Checked in (first receipt): household_code is "
                                           "the code to print or show as a QR code.",
                            **_json_body("Acknowledgement")},
                    "200": accepted["200"], **household_errors},
            }},
            "/v1/shelters/{shelter_id}/households/{code}/checkout": {"post": {
                "summary": "Check a household out of a shelter",
                "description": households_who + " Refused: a household not checked in at "
                               "this shelter (404 unknown_household); occurred_at before its "
                               "check-in (422).",
                "security": bearer,
                "parameters": [household_site, household_code],
                "requestBody": {"required": True, **_json_body("HouseholdCheckOutRequest")},
                "responses": {**accepted, **household_errors},
            }},
            "/v1/shelters/{shelter_id}/households/{code}/transfer": {"post": {
                "summary": "Transfer a household to another shelter",
                "description": households_who + " The source (the URL's shelter) must be "
                               "permitted, the destination (to) may be any shelter. One "
                               "transaction writes household_checked_out at the source "
                               "(transferred_to) and household_checked_in at the "
                               "destination (transferred_from, the same size, needs and "
                               "personal fields). Refused: a household not checked in at "
                               "the source (404 unknown_household); to the same shelter "
                               "(422).",
                "security": bearer,
                "parameters": [household_site, household_code],
                "requestBody": {"required": True, **_json_body("HouseholdTransferRequest")},
                "responses": {**accepted, **household_errors},
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
            "/v1/supplies/requests": {
                "post": {
                    "summary": "Request supplies for a shelter, facility or generator",
                    "description": "Roles: shelter_staff (for a site its token's shelters "
                                   "claim names, else a site of its areas), hq (any site). "
                                   "The site must be a region-pack site that can request "
                                   "(a shelter) or a registered generator; intake fills the "
                                   "area from it. client_id is the idempotency key.",
                    "security": bearer,
                    "requestBody": {"required": True, **_json_body("SupplyRequestRequest")},
                    "responses": {
                        "201": {"description": "Recorded durably (first receipt): the "
                                               "request's id and status.",
                                **_json_body("Acknowledgement")},
                        "200": accepted["200"],
                        **_errors(400, 401, 403, 408, 409, 413, 415, 422, 429, 503)},
                },
                "get": {
                    "summary": "Supply requests and where each stands, newest first",
                    "description": "Roles: shelter_staff (the requests of the sites it may "
                                   "act for), hq (all).",
                    "security": bearer,
                    "parameters": [
                        {"name": "site", "in": "query", "required": False,
                         "description": "Only this site's requests.",
                         "schema": {"type": "string"}},
                        {"name": "status", "in": "query", "required": False,
                         "description": "Only requests in this status.",
                         "schema": {"type": "string",
                                    "enum": [x.value for x in SupplyRequestStatus]}}],
                    "responses": {
                        "200": {"description": "The requests.",
                                **_json_body("SupplyRequestList")},
                        **_errors(400, 401, 403, 429, 503)},
                },
            },
            **{f"/v1/supplies/requests/{{request_id}}/{name.value}": {"post": {
                "summary": f"{name.value.capitalize()} a supply request",
                "description": f"Roles: {who}. Checked against the request's status "
                               "(requested → assigned → dispatched → received; cancel "
                               "before dispatch): 409 transition_refused otherwise. "
                               "client_id is the idempotency key.",
                "security": bearer,
                "parameters": [{"name": "request_id", "in": "path", "required": True,
                                "schema": {"type": "string", "format": "uuid"}}],
                "requestBody": {"required": True, **_json_body(
                    "SupplyAssignRequest" if name is Step.ASSIGN else "SupplyStepRequest")},
                "responses": {**accepted, **_errors(400, 401, 403, 404, 408, 409, 413, 415,
                                                    422, 429, 503)},
            }} for name, who in _STEP_ROLES.items()},
            "/v1/generators": {"post": {
                "summary": "Register a community generator (again: replace its registration)",
                "description": "Roles: hq. The area defaults to the site's, when a site is "
                               "named. client_id is the idempotency key.",
                "security": bearer,
                "requestBody": {"required": True, **_json_body("GeneratorRegisterRequest")},
                "responses": {**accepted,
                              **_errors(400, 401, 403, 408, 409, 413, 415, 422, 429, 503)},
            }},
            "/v1/generators/{generator_id}/status": {"post": {
                "summary": "Report a generator's state (running, stopped, fuel low, fault)",
                "description": "Roles: hq; field and shelter_staff whose areas hold the "
                               "generator. client_id is the idempotency key.",
                "security": bearer,
                "parameters": [{"name": "generator_id", "in": "path", "required": True,
                                "description": "A registered generator.",
                                "schema": {"type": "string"}}],
                "requestBody": {"required": True, **_json_body("GeneratorStatusRequest")},
                "responses": {**accepted,
                              **_errors(400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503)},
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
