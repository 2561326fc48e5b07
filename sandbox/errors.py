"""Errors raised by the sandbox layer; the daemon maps them to API errors in one place."""


class SandboxError(Exception):
    """Base class: something about a sandbox failed."""


class RuntimeFailure(SandboxError):
    """The runtime (runc, mounts, cgroups) failed to do what was asked."""


class HostStorageFull(RuntimeFailure):
    """The host's state disk is full (workspace image, bundle, runtime state)."""


class SandboxGone(SandboxError):
    """The sandbox no longer exists on the host."""


class AgentUnavailable(SandboxError):
    """The in-sandbox agent cannot be reached (sandbox stopped, killed, or starting)."""


class AgentBusy(SandboxError):
    """Every connection to the agent is in use and the bounded queue for one is full (or a
    wait in it ran out): nothing was sent to the agent, so the operation may be retried."""


class AgentTimeout(SandboxError):
    """The agent did not answer within its deadline (stalled, or the sandbox is frozen)."""


class AgentProtocolError(SandboxError):
    """The agent said something that breaks the protocol; treated as hostile."""


class AgentError(SandboxError):
    """The agent refused an operation with a typed reason (not_found, no_space, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
