"""Dataset formatting: MedQA, MMLU-Pro, MedMCQA and PubMedQA rows into OpenRLHF (or verl) prompt files.

As in lm-evaluation-harness, what differs per dataset is data: a `Source` says which field holds the
question, the options and the answer. Nothing is silently wrong: an input the formatter cannot read exactly
(an encoding, a layout, a repeated JSON key, an answer convention it would have to guess) stops the run
with the file, the line and what to do.

- `sources`: the registry, `Source` and `SOURCES`.
- `formatting`: one source row as one output row (`format_row`, `verl_row`, `sft_response`, `normalize`),
  and the errors `DataError` and `InvalidRow`.
- `readers`: the strict readers of source files and the hub (`read_rows`), and of --exclude and --ids files.
- `medmcqa`: MedMCQA's answer numbering, inferred from evidence (`stated_letter`).
- `pipeline`: `prepare`, a whole dataset into prompt files and summaries (`summary_path`), its options
  checked by `PrepareOptions`.
"""

from med_rlvr_plugin.data.formatting import DataError, InvalidRow, format_row, normalize, sft_response, verl_row
from med_rlvr_plugin.data.medmcqa import stated_letter
from med_rlvr_plugin.data.pipeline import PrepareOptions, prepare, summary_path
from med_rlvr_plugin.data.readers import read_rows
from med_rlvr_plugin.data.sources import SOURCES, Source

__all__ = [
    "SOURCES",
    "DataError",
    "InvalidRow",
    "PrepareOptions",
    "Source",
    "format_row",
    "normalize",
    "prepare",
    "read_rows",
    "sft_response",
    "stated_letter",
    "summary_path",
    "verl_row",
]
