"""The one error table: statuses, OpenAI error types, and `x-should-retry`/`Retry-After`
that tell the SDKs the truth (true, with a wait where it is known, only on transient
refusals); and the seam that turns sandbox-layer failures into those errors."""

from __future__ import annotations

import pytest

from daemon import errors
from daemon.egress_proxy import EgressUnavailable
from daemon.sandboxes import translate
from sandbox import errors as sandbox_errors
from sandbox.images import ImageError

TRANSIENT = {
    errors.SandboxBusy: (429, "1"),
    errors.ProxyUnavailable: (503, "2"),
    errors.ShuttingDown: (503, "2"),
    errors.SessionBusy: (409, None),
    errors.RequestInFlight: (409, "1"),
    errors.CapacityExceeded: (429, None),  # how long until a delete makes room is not known
    errors.TooManyRelays: (429, None),  # how long an open relay streams is not known
}


@pytest.mark.parametrize("cls", list(errors.HTTP_ERRORS), ids=lambda c: c.__name__)
def test_retry_headers_are_truthful(cls: type[errors.DomainError]) -> None:
    exc = cls() if cls is errors.ContainerExpired else cls("message")  # type: ignore[call-arg]
    status, body, headers = errors.http_error(exc)
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == cls.code
    if cls in TRANSIENT:
        assert (status, headers.get("Retry-After")) == TRANSIENT[cls]
        assert headers["x-should-retry"] == "true"
    else:
        assert headers == {"x-should-retry": "false"}, cls


@pytest.mark.parametrize(
    ("raised", "expected", "status"),
    [
        (sandbox_errors.AgentBusy("all busy"), errors.SandboxBusy, 429),
        (sandbox_errors.AgentTimeout("stalled"), errors.SandboxTimeout, 504),
        (TimeoutError(), errors.SandboxTimeout, 504),
        (sandbox_errors.AgentUnavailable("closed"), errors.SandboxUnavailable, 503),
        (EgressUnavailable("proxy down"), errors.ProxyUnavailable, 503),
        (sandbox_errors.AgentProtocolError("garbage"), errors.SandboxFailed, 500),
        (sandbox_errors.AgentError("weird_code", "?"), errors.SandboxFailed, 500),
        (sandbox_errors.AgentError("session_busy", "busy"), errors.SessionBusy, 409),
        (sandbox_errors.RuntimeFailure("runc died"), errors.SandboxFailed, 500),
        (sandbox_errors.HostStorageFull("full"), errors.StorageFull, 507),
        (ImageError("image 'x' not found"), errors.InvalidRequest, 400),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_the_seam_types_every_sandbox_failure(
    raised: Exception, expected: type[errors.DomainError], status: int
) -> None:
    with pytest.raises(expected) as caught, translate("exec"):
        raise raised
    assert errors.http_error(caught.value)[0] == status
