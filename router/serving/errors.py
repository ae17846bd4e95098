"""OpenAI's error shape for every refusal the ingress makes, FastAPI's own included (a body it cannot parse, an
unknown path, a wrong method), and the request id that ties a refusal to its log lines."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from router.serving import replica
from router.serving.schemas import FIELD_ERROR, error_body


def error_response(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=headers)


def current_request_id() -> str:
    """Ray Serve's request id: the client's x-request-id, or one Serve made; Serve returns it on every response."""
    try:
        from ray.serve.context import _get_serve_request_context

        return _get_serve_request_context().request_id or "-"
    except Exception:  # outside a Serve request
        return "-"


async def _denied(request: Request) -> JSONResponse | None:
    # access and size checks come first: a client without the key learns nothing about the body schema
    ingress = replica.active()
    return None if ingress is None else await ingress._guard(request)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    if (denied := await _denied(request)) is not None:
        return denied
    problems, params = [], []
    for e in exc.errors():
        loc = list(e["loc"][1:] if e["loc"] and e["loc"][0] == "body" else e["loc"])
        field = ".".join(str(p) for p in loc)
        if e["type"] == FIELD_ERROR:  # a check over the whole body, which names the field itself
            params.append(e["ctx"]["field"])
            problems.append(e["msg"])
            continue
        params.append(field)
        if not loc and isinstance(e.get("input"), bytes):  # FastAPI parses only a body declared as JSON
            declared = request.headers.get("content-type")
            problems.append(f"body: send JSON with content-type: application/json, not "
                            f"{'content-type: ' + declared if declared else 'without a content-type'}")
            continue
        problems.append(f"body is not valid JSON: {e.get('ctx', {}).get('error', e['msg'])}" if e["type"] == "json_invalid"
                        else f"{field or 'body'}: {e['msg']}")
    return error_response(400, "; ".join(problems), param=next((p for p in params if p), None))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if (denied := await _denied(request)) is not None:
        return denied
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        message = f"body is not valid UTF-8: {cause}"
    elif cause is not None:  # FastAPI's "error parsing the body", e.g. JSON nested too deeply
        message = f"body cannot be parsed as JSON: {type(cause).__name__}: {str(cause)[:200]}"
    else:
        message = f"{request.method} {request.url.path}: {exc.detail}"
    return error_response(exc.status_code, message, headers=exc.headers)


def install_error_handlers(api: FastAPI) -> None:
    """FastAPI's refusals in OpenAI's error shape, each after the live policy's access and size checks."""
    api.add_exception_handler(RequestValidationError, _invalid_request)
    api.add_exception_handler(StarletteHTTPException, _http_error)
