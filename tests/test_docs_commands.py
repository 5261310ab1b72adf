"""Every command README.md and docs/*.md show that can run on a CPU machine is run here, from the pages' own
code blocks, so a documented command that stops working fails the suite.

A `bash` or `python` block is run as written, in a sandbox folder laid out like a checkout after the docs'
set-up steps: the package, scripts and venv linked in, `data/` prepared from the shared real data and small
local fixtures, the raw files the data page names, a tiny model at `RUN/model`, and evaluation outputs
under `eval/`. A block that cannot run on a CPU machine says why on the line just before its fence:
`<!-- not run by the tests: REASON -->` (a GPU, the network, a cluster, a fragment with `...`); a block that
another test runs with inputs of its own says which: `<!-- run by tests/test_x.py, ... -->`.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tests.conftest import BIN, REPO, clean_env
from tests.real_data import MEDQA_DEV, MEDQA_TEST, MMLU_PRO_HEALTH, real_file

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent> *)```(?P<language>bash|python)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
# On the line before a fence: why the block is not run here, or which test file runs it with its own inputs.
MARKER = re.compile(r"<!-- (?:not run by the tests: (?P<reason>.+?)|run by (?P<test>tests/\w+\.py)\b.*?) -->")
OOD_FIXTURES = REPO / "tests/fixtures/ood"
LINKED = ("med_rlvr_plugin", "launch", "data_prep", "setup.sh", "setup.cfg", "pyproject.toml", "tests")


def code_blocks() -> list:
    blocks = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            before = text[: match.start()].rstrip().rsplit("\n", 1)[-1]
            body = "\n".join(row.removeprefix(match["indent"]) for row in match["body"].splitlines())
            marker = MARKER.search(before)
            if marker and marker["test"]:
                # Run by its own test: that file must exist and name the page it takes the block from.
                assert page.name in (REPO / marker["test"]).read_text(), f"{page.name}:{line}: {marker['test']}"
                continue
            reason = marker and marker["reason"]
            blocks.append(pytest.param(match["language"], body, reason, id=f"{page.name}:{line}"))
    return blocks


BLOCKS = code_blocks()


def test_the_pages_have_code_blocks_and_every_skipped_block_says_why() -> None:
    assert len(BLOCKS) > 20
    for block in BLOCKS:
        language, body, reason = block.values
        assert reason is None or reason.strip(), block.id
        # An elided command cannot run: it must say so instead of failing or passing by accident.
        assert reason or " ... " not in body, f"{block.id}: a fragment with '...' needs a not-run marker"


def test_the_readme_test_command_is_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    command = "bash setup.sh && .venv/bin/python -m pytest"
    assert command in readme.split("```")[3]  # the second code block: the test command
    assert (REPO / ".ci/run").read_text().rstrip().endswith(command)


@pytest.fixture(scope="module")
def sandbox_template(tmp_path_factory: pytest.TempPathFactory, tiny_qwen2: Path) -> Path:
    """A checkout after the docs' set-up steps, built once; each block runs in its own copy."""
    from med_rlvr_plugin.data import prepare

    root = tmp_path_factory.mktemp("docs_sandbox")
    for name in LINKED:
        (root / name).symlink_to(REPO / name)
    (root / ".venv").symlink_to(Path(sys.prefix))
    test, dev = real_file(MEDQA_TEST), real_file(MEDQA_DEV)
    raw = {
        "phrases_no_exclude_test.jsonl": test,
        "phrases_no_exclude_dev.jsonl": dev,
        "mmlu_pro_test_health.jsonl": real_file(MMLU_PRO_HEALTH),
    }
    for name, path in raw.items():
        (root / name).symlink_to(path)
    # The other raw files the data page names: hand-written releases in their published layouts.
    for name in ("medmcqa/dev.json", "pubmedqa/ori_pqal.json", "pubmedqa/test_ground_truth.json", "mmlu"):
        (root / Path(name).name).symlink_to(OOD_FIXTURES / name)
    data = root / "data"
    prepare("medqa", data / "medqa_test.jsonl", input_path=test)
    # The training split is on the hub only; the dev file's 1,272 questions stand in for it.
    prepare("medqa", data / "medqa_train.jsonl", input_path=dev, dev_output=data / "medqa_dev.jsonl")
    prepare("mmlu_pro", data / "mmlu_pro_health.jsonl", input_path=real_file(MMLU_PRO_HEALTH))
    prepare("medmcqa", data / "medmcqa_dev.jsonl", input_path=root / "dev.json")
    prepare("pubmedqa", data / "pubmedqa.jsonl", input_path=root / "ori_pqal.json")
    prepare(
        "pubmedqa",
        data / "pubmedqa_test.jsonl",
        input_path=root / "ori_pqal.json",
        ids=root / "test_ground_truth.json",
    )
    prepare("mmlu", data / "mmlu_medical.jsonl", input_path=root / "mmlu/test")
    # The tiny model, made to end every response at once: the pages' commands generate up to 1,024 tokens,
    # which a random model fills, minutes per command on a CPU. Its generation config allows only EOS.
    model = shutil.copytree(tiny_qwen2, root / "RUN/model")
    config = json.loads((model / "generation_config.json").read_text())
    eos = AutoTokenizer.from_pretrained(model).eos_token_id
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    config |= {"eos_token_id": eos, "suppress_tokens": [token for token in range(vocab) if token != eos]}
    (model / "generation_config.json").write_text(json.dumps(config))
    # Evaluation outputs the tables commands read, as the GPU commands before them would leave them.
    base = shutil.copytree(model, root / "models/Qwen2.5-3B")
    command = [sys.executable, "-m", "med_rlvr_plugin.evaluate", "run", str(base), str(model), "--limit", "3"]
    command += ["--output-dir", "eval/paper", "--device", "cpu"]
    done = subprocess.run(command, cwd=root, env=clean_env(PYTHONPATH=str(REPO)), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return root


def outputs_of(body: str) -> list[str]:
    """The files a block's commands write: they (and their summaries) must not exist before it runs."""
    return re.findall(r"--(?:dev-)?output[ =](\S+)", body)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("language", "body"), [pytest.param(*block.values[:2], id=block.id) for block in BLOCKS if not block.values[2]]
)
def test_documented_command_runs(language: str, body: str, sandbox_template: Path, tmp_path: Path) -> None:
    sandbox = tmp_path / "checkout"
    shutil.copytree(sandbox_template, sandbox, symlinks=True)
    for output in map(Path, outputs_of(body)):
        for made in (sandbox / output.parent).glob(f"{output.stem}.*"):  # the file and its summary
            made.unlink()
    # `bash setup.sh` is the first half of .ci/run, which has run it in this checkout already.
    script = body.replace("bash setup.sh && ", "") if language == "bash" else body
    assert "setup.sh &&" not in script or "--print" in script
    command = ["bash", "-c", "set -euo pipefail\n" + script] if language == "bash" else [sys.executable, "-c", body]
    done = subprocess.run(
        command,
        cwd=sandbox,
        env=clean_env(PYTHONPATH=str(REPO), PATH=f"{sandbox / '.venv/bin'}:{BIN}:/usr/bin:/bin"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
