"""The OpenAPI 3.1 document, built from the Structs that decode requests and encode responses."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import msgspec

from core.scoring import RISK_FLAGS
from schema import responses as out
from schema import structs as inp

__all__ = ["OPERATIONS", "openapi_document"]


class Operation(NamedTuple):
    method: str
    path: str
    summary: str
    auth: str  # "none", "user", "agent" or "either"
    response: type | None
    status: int = 200
    request: type | None = None
    listing: bool = False
    query: tuple[str, ...] = ()
    body_optional: bool = False


_PAGE = ("limit", "offset")

OPERATIONS: tuple[Operation, ...] = (
    Operation("get", "/health", "Liveness", "none", out.Health),
    Operation("get", "/ready", "Readiness: PostgreSQL and Redis answer", "none", out.Health),
    Operation("post", "/api/auth/register", "Create an account", "none", out.RegisterOut, 201,
              inp.RegisterIn),
    Operation("post", "/api/auth/login", "Get a bearer token", "none", out.LoginOut, 200,
              inp.LoginIn),
    Operation("get", "/api/auth/me", "The current user", "user", out.UserOut),
    Operation("get", "/api/projects", "List projects", "user", out.ProjectOut, listing=True,
              query=_PAGE),
    Operation("post", "/api/projects", "Create a project", "user", out.ProjectOut, 201,
              inp.ProjectIn),
    Operation("get", "/api/projects/{project_id}", "Get a project", "user", out.ProjectOut),
    Operation("put", "/api/projects/{project_id}", "Replace a project's fields", "user",
              out.ProjectOut, 200, inp.ProjectIn),
    Operation("patch", "/api/projects/{project_id}", "Change only the fields sent", "user",
              out.ProjectOut, 200, inp.ProjectPatch),
    Operation("delete", "/api/projects/{project_id}", "Delete a project and all it holds", "user",
              out.Deleted),
    Operation("get", "/api/projects/{project_id}/scores",
              "Latest score, average and risk counts over the last finished runs, and "
              "the trend of all of them", "user", out.ProjectScores,
              query=("last",)),
    Operation("post", "/api/projects/{project_id}/agents", "Create an agent; returns its key once",
              "user", out.AgentWithKey, 201, inp.AgentCreate),
    Operation("post", "/api/agents", "Create an agent (project_id in the body)", "user",
              out.AgentWithKey, 201, inp.AgentCreate),
    Operation("get", "/api/agents", "List agents", "user", out.AgentOut, listing=True,
              query=(*_PAGE, "project_id")),
    Operation("get", "/api/agents/{agent_id}", "Get an agent", "user", out.AgentOut),
    Operation("delete", "/api/agents/{agent_id}", "Delete an agent; its key stops working", "user",
              out.Deleted),
    Operation("post", "/api/agents/{agent_id}/rotate-key",
              "Replace an agent's key; the old key stops working", "user", out.AgentWithKey),
    Operation("get", "/api/runs", "List runs, newest first", "either", out.RunOut, listing=True,
              query=(*_PAGE, "project_id", "agent_id", "status", "flag")),
    Operation("post", "/api/runs", "Create a run in the agent key's project", "agent", out.RunOut,
              201, inp.RunCreate),
    Operation("get", "/api/runs/{run_id}", "Get a run", "either", out.RunOut),
    Operation("delete", "/api/runs/{run_id}", "Delete a run with its events and report", "user",
              out.Deleted),
    Operation("post", "/api/runs/{run_id}/status", "Change a run's status", "agent", out.RunOut,
              200, inp.RunStatusIn),
    Operation("patch", "/api/runs/{run_id}/status", "Same as POST", "agent", out.RunOut, 200,
              inp.RunStatusIn),
    Operation("post", "/api/runs/{run_id}/finish", "Finish a run (finishing twice is not an error)",
              "agent", out.RunOut, 200, inp.RunFinish, body_optional=True),
    Operation("get", "/api/runs/{run_id}/events", "List a run's events, oldest first", "either",
              out.EventOut, listing=True, query=(*_PAGE, "event_type", "severity")),
    Operation("post", "/api/runs/{run_id}/events",
              "Append one event, or {\"events\": [...]} with up to 1000", "agent", out.Appended,
              202, inp.EventIn),
    Operation("get", "/api/runs/{run_id}/score", "The run's stored score", "either", out.RunScore),
    Operation("post", "/api/runs/{run_id}/report", "Create or replace the run's report", "agent",
              out.ReportOut, 201, inp.ReportIn),
    Operation("put", "/api/runs/{run_id}/report", "Same as POST", "agent", out.ReportOut, 201,
              inp.ReportIn),
    Operation("get", "/api/runs/{run_id}/report", "Get the run's report", "either", out.ReportOut),
    Operation("delete", "/api/runs/{run_id}/report", "Delete the run's report", "user",
              out.Deleted),
    Operation("get", "/api/events", "List events: of one run (run_id), or of all runs",
              "either", out.EventOut, listing=True,
              query=(*_PAGE, "run_id", "event_type", "severity")),
    Operation("get", "/api/events/{event_id}", "Get an event", "either", out.EventOut),
    Operation("get", "/api/reports", "List reports", "either", out.ReportOut, listing=True,
              query=(*_PAGE, "project_id")),
    Operation("get", "/api/reports/{report_id}", "Get a report", "either", out.ReportOut),
    Operation("delete", "/api/reports/{report_id}", "Delete a report", "user", out.Deleted),
)  # fmt: skip

_OPERATION_ID_CHARS = re.compile(r"[^A-Za-z0-9]+")
_SECURITY = {
    "none": [],
    "user": [{"bearerAuth": []}],
    "agent": [{"agentKey": []}],
    "either": [{"bearerAuth": []}, {"agentKey": []}],
}
_QUERY_SCHEMAS: dict[str, dict[str, Any]] = {
    "limit": {"type": "integer"},
    "offset": {"type": "integer"},
    "last": {"type": "integer"},
    "status": {"type": "string", "enum": list(inp.RUN_STATUSES)},
    "flag": {"type": "string", "enum": list(RISK_FLAGS)},
    "severity": {"type": "string", "enum": list(inp.SEVERITIES)},
    "event_type": {"type": "string", "maxLength": 120},
}
_QUERY_DESCRIPTIONS = {
    "limit": "Items per page.",
    "offset": "Items to skip; negative values count as 0.",
    "last": "How many of the newest runs to summarise.",
    "project_id": "Only items of this project.",
    "agent_id": "Only runs of this agent.",
    "run_id": "Only events of this run, oldest first.",
    "status": "Only runs with this status.",
    "flag": "Only runs with this risk flag set.",
    "event_type": "Only events of this type (needs run_id on /api/events).",
    "severity": "Only events of this severity (needs run_id on /api/events).",
}
_ERROR = {
    "type": "object",
    "required": ["success", "error", "message"],
    "properties": {
        "success": {"const": False},
        "error": {"type": "string"},
        "message": {"type": "string"},
    },
}


def _ref(struct: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{struct.__name__}"}


def _envelope(op: Operation) -> dict[str, Any]:
    assert op.response is not None
    data: dict[str, Any] = _ref(op.response)
    properties: dict[str, Any] = {"success": {"const": True}, "message": {"type": "string"}}
    required = ["success", "message", "data"]
    if op.listing:
        data = {"type": "array", "items": data}
        properties["meta"] = {
            "type": "object",
            "required": ["total", "limit", "offset"],
            "properties": {name: {"type": "integer"} for name in ("total", "limit", "offset")},
        }
        required.append("meta")
    properties["data"] = data
    return {"type": "object", "required": required, "properties": properties}


def _responses(op: Operation) -> dict[str, Any]:
    error = {
        "description": "Error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    responses: dict[str, Any] = {
        str(op.status): {
            "description": op.summary,
            "content": {"application/json": {"schema": _envelope(op)}},
        },
        "4XX": error,
        "5XX": error,
    }
    if op.path.endswith("/report") and op.method in ("post", "put"):
        responses["200"] = responses[str(op.status)] | {"description": "Report replaced"}
    return responses


def _operation(op: Operation) -> dict[str, Any]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _path_params(op.path)
    ]
    parameters += [_query_parameter(op, name) for name in op.query]
    spec: dict[str, Any] = {
        "summary": op.summary,
        "operationId": op.method + "_" + _OPERATION_ID_CHARS.sub("_", op.path).strip("_"),
        "security": _SECURITY[op.auth],
        "parameters": parameters,
        "responses": _responses(op),
    }
    if op.request is not None:
        schema: dict[str, Any] = _ref(op.request)
        if op.request is inp.EventIn:
            schema = {"oneOf": [schema, _ref(inp.EventBatch)]}
        spec["requestBody"] = {
            "required": not op.body_optional,
            "content": {"application/json": {"schema": schema}},
        }
    return spec


def _query_parameter(op: Operation, name: str) -> dict[str, Any]:
    schema = dict(_QUERY_SCHEMAS.get(name, {"type": "string"}))
    description = _QUERY_DESCRIPTIONS.get(name, "")
    if name in ("limit", "last"):
        default, maximum = (50, 500) if op.response is out.EventOut else (20, 100)
        schema["default"] = default
        description = (
            f"{description} Default {default}; values below 1 count as 1 and values above "
            f"{maximum} as {maximum}."
        )
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description.strip(),
        "schema": schema,
    }


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def openapi_document(*, title: str, version: str) -> dict[str, Any]:
    structs = [op.request for op in OPERATIONS if op.request is not None]
    structs += [op.response for op in OPERATIONS if op.response is not None]
    structs.append(inp.EventBatch)
    _, components = msgspec.json.schema_components(
        sorted(set(structs), key=lambda s: s.__name__), ref_template="#/components/schemas/{name}"
    )
    components["Error"] = _ERROR
    # `events` is decoded as raw items so one bad event rejects only itself; its items
    # are still events.
    components["EventBatch"]["properties"]["events"]["items"] = _ref(inp.EventIn)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "Agents write with the `X-Agent-Key` header; people read and manage with "
                "`Authorization: Bearer <token>`, the token coming from `POST /api/auth/login`."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "agentKey": {"type": "apiKey", "in": "header", "name": "X-Agent-Key"},
            },
        },
    }
