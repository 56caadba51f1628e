"""Typed errors: each carries the message shown to the user and the exit code."""

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_ATTACH = 2
EXIT_TARGET_GONE = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of the output went away, as `| head` does


class MemtopError(Exception):
    """An error the user sees: `message` names the cause and the fix."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(MemtopError):
    """Bad command-line input."""

    exit_code = EXIT_USAGE


class AttachError(MemtopError):
    """memtop could not attach to, start or reach the agent."""

    exit_code = EXIT_ATTACH


class TargetExited(MemtopError):
    """The target process ended before memtop could show anything."""

    exit_code = EXIT_TARGET_GONE


class ConnectionLost(MemtopError):
    """The agent's socket closed or stopped answering."""

    exit_code = EXIT_TARGET_GONE


class BadReply(MemtopError):
    """The agent sent something memtop cannot use: another memtop version, or not memtop."""

    exit_code = EXIT_ATTACH


class AgentError(MemtopError):
    """The agent answered a request with an error reply."""

    exit_code = EXIT_ATTACH

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"agent error {code}: {message}")
        self.code = code
        self.detail = message


class AgentBusy(AgentError):
    """The agent's time budget is spent for now: ask again in `retry_in` seconds."""

    def __init__(self, message: str, retry_in: float) -> None:
        super().__init__("busy", message)
        self.retry_in = retry_in
        self.message = message
