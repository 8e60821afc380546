"""One line for an API that refused or was not there, instead of a 30-line traceback."""

from __future__ import annotations

__all__ = ["api_error_line"]

_HOW_TO_AUTH = (
    "set PREFECT_API_AUTH_STRING to the server's user:password "
    "(`fleetflow stack status` prints the line for the stack on this machine)"
)
_HOW_TO_REACH = (
    "start the stack (`fleetflow stack up`; `fleetflow stack status` says where it runs) "
    "or point PREFECT_API_URL at a running server"
)


def api_error_line(exc: BaseException) -> str | None:
    """What went wrong and what to do, if `exc` (or what caused it) is an HTTP refusal or
    a server that did not answer; None for anything else (a bug keeps its traceback)."""
    import httpx  # here: the CLI's other commands must not pay for it

    seen: BaseException | None = exc
    for _ in range(10):  # Prefect wraps httpx errors, sometimes more than once
        if seen is None:
            return None
        if isinstance(seen, httpx.HTTPStatusError):
            return _status_line(seen)
        if isinstance(seen, httpx.TransportError):
            return _transport_line(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _where(exc: object) -> str:
    """The API's address without user info or query: a URL may carry credentials."""
    import httpx

    try:
        url = (
            exc.request.url if isinstance(exc, httpx.RequestError | httpx.HTTPStatusError) else None
        )
    except RuntimeError:  # an error raised without its request
        return "the Prefect API"
    if url is None:
        return "the Prefect API"
    port = f":{url.port}" if url.port else ""
    return f"the Prefect API at {url.scheme}://{url.host}{port}"


def _status_line(exc: object) -> str:
    import httpx

    from fleetflow.ops._api import detail

    assert isinstance(exc, httpx.HTTPStatusError)
    code = exc.response.status_code
    if code in (401, 403):
        return f"{_where(exc)} refused the credentials (HTTP {code}): {_HOW_TO_AUTH}"
    path = exc.request.url.path
    return (
        f"{_where(exc)} answered HTTP {code} to {exc.request.method} {path}: {detail(exc.response)}"
    )


def _transport_line(exc: object) -> str:
    import httpx

    assert isinstance(exc, httpx.TransportError)
    what = (
        "did not answer in time" if isinstance(exc, httpx.TimeoutException) else "is not answering"
    )
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return f"{_where(exc)} {what} ({reason}): {_HOW_TO_REACH}"
