"""The launcher's one error: a problem with the command, the data, the reward file or the output folder."""

from med_rlvr_plugin.cli import ToolError


class LaunchError(ToolError):
    """A problem with the command, the data, the reward file or the output folder; the message says what to do."""
