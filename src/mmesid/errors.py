"""User-facing errors: the CLI turns these into one clear message and exit status 2."""


class MmesidError(Exception):
    """An error caused by the user's input (file, line, key), not by a bug."""


class InputFormatError(MmesidError):
    """A malformed input file; the message names the file and the line."""

    def __init__(self, path, line: int | None, message: str):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class ConfigError(MmesidError):
    """A bad configuration: unknown key, wrong type, bad value; the message names the key."""
