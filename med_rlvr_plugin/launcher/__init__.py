"""What the launch scripts run in Python: check a training command, write the run's manifest, start it.

    python3 -m med_rlvr_plugin.launcher ppo --output-dir DIR --run-name NAME [--dry-run] [--resume] -- ARGS
    python3 -m med_rlvr_plugin.launcher sft --output-dir DIR --run-name NAME --num-gpus N [...] -- ARGS
    python3 -m med_rlvr_plugin.launcher sample FILE [--sft]

ARGS are OpenRLHF 0.11.2 flags, built by launch/*.sh. The checks run without a GPU: OpenRLHF's own parser,
post-parse checks and the assertions of its `train()`, recovered from the installed package's source; the
data, loaded by OpenRLHF's own dataset code; the run plan (whole rollouts, an even split over the ranks,
eval cost, checkpoints and their disk size); and, for PPO, the reward file, loaded by OpenRLHF's own loader
under the MED_RLVR_* variables of this process. A PPO run then checks the cluster and passes those variables
to every Ray actor (see `ray_job.run_ppo`).

- `__main__`: the command line: flags, what is printed, exit codes.
- `runs`: a PPO or SFT run checked end to end, in order, the flags the launcher adds; the SFT run's start.
- `openrlhf_cli`: OpenRLHF's parser, train()'s assertions and Ray env, read from the installed source.
- `plan`: the run plan: whole rollouts, rank shares, eval and checkpoint intervals, checkpoint disk.
- `checks`: the data and its prompt lengths, the reward file (or server) and the disk.
- `manifest`: the output folder and the run's manifest.
- `ray_job`: the Ray cluster check, the reward probe on every node, then OpenRLHF's PPO CLI.
- `sample`: the built-in sample that stands in for MedQA when data/ is not prepared.
- `errors`: LaunchError.
"""

from med_rlvr_plugin.launcher.errors import LaunchError
from med_rlvr_plugin.launcher.openrlhf_cli import PPO_MODULE, SFT_MODULE
from med_rlvr_plugin.launcher.sample import SAMPLE_QUESTIONS, SAMPLE_SOURCE, sample_rows

__all__ = ["LaunchError", "PPO_MODULE", "SFT_MODULE", "SAMPLE_QUESTIONS", "SAMPLE_SOURCE", "sample_rows"]
