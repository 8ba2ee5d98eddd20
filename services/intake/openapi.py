"""The OpenAPI 3.1 document of the intake HTTP API, generated from the pydantic models.

Request and response schemas come from the same models the handlers validate
and answer with (:mod:`schemas.intake` and :mod:`services.intake.contract`), so
the document cannot drift from the code; ``GET /v1/openapi.json`` serves it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from schemas.intake import HazardObservationRequest, ReportRequest, ShelterStatusRequest
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


@cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI document (built once per process)."""
    requests: list[type[BaseModel]] = [ReportRequest, ShelterStatusRequest,
                                       HazardObservationRequest]
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
                "acknowledged, then published to Kafka."
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
                                "schema": {"type": "string"}}, _IDEMPOTENCY_KEY],
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
