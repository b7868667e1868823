"""The errors a user can cause and fix. Every module raises these; the CLI prints their
message on one line and exits with status 2 (130 for Interrupted)."""


class ConfigError(ValueError):
    """A user error in a config file or a --set override; the message names the key."""


class DataError(ValueError):
    """A problem with the user's data; the message names the file (and line)."""


class CheckpointError(ValueError):
    """A checkpoint or run directory that cannot be used; the message names the file and the reason."""


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what is saved."""


class PlotError(ValueError):
    """A picture cannot be drawn; the message says why (e.g. matplotlib is missing)."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped training after `last.pt` was saved."""
