"""The launcher's one error: a problem with the command, the data, the reward file or the output folder."""


class LaunchError(Exception):
    """A problem with the command, the data, the reward file or the output folder; the message says what to do."""
