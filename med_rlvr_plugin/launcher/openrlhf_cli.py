"""OpenRLHF's command line read from the installed source: its parser, train()'s assertions, its Ray env.

Nothing here imports OpenRLHF's CLI modules (which would import vLLM, flash-attn and CUDA): the code is
taken from their syntax trees and run against the command's arguments.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import os
import sys
from pathlib import Path
from types import SimpleNamespace

from med_rlvr_plugin.launcher.errors import LaunchError

PPO_MODULE = "openrlhf.cli.train_ppo_ray"


SFT_MODULE = "openrlhf.cli.train_sft"


def _cli_source(module: str) -> tuple[str, ast.Module]:
    """The path and syntax tree of an installed OpenRLHF CLI module, read without importing it."""
    try:
        path = importlib.util.find_spec(module).origin
    except ModuleNotFoundError:
        raise LaunchError(
            f"{module} is not installed in {sys.executable}: run `bash setup.sh` (or `bash setup.sh gpu`) and "
            "`. .venv/bin/activate` first"
        ) from None
    return path, ast.parse(Path(path).read_text(encoding="utf-8"), path)


def parse_openrlhf_args(module: str, argv: list[str]) -> SimpleNamespace:
    """The arguments OpenRLHF's CLI `module` would train with, after its own parser and post-parse checks.

    The parser is built inside the CLI's `if __name__ == "__main__":` block, which ends by calling
    `train(args)`. That block runs here from the installed source with `train` swapped for a function that
    keeps `args`, so no flag list is kept by hand and nothing imports vLLM, flash-attn or CUDA.
    """
    path, tree = _cli_source(module)
    main_blocks = [node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
    stdlib = sys.stdlib_module_names
    stdlib_imports = [
        node
        for node in tree.body
        if isinstance(node, ast.Import)
        and all(alias.name.split(".")[0] in stdlib for alias in node.names)
        or isinstance(node, ast.ImportFrom)
        and (node.module or "").split(".")[0] in stdlib
    ]
    if len(main_blocks) != 1:
        raise LaunchError(f"{path}: expected one `if __name__ == '__main__':` block; is this OpenRLHF 0.11.2?")
    code = compile(ast.Module(body=stdlib_imports + main_blocks[0].body, type_ignores=[]), path, "exec")

    captured = []
    namespace = {"__name__": "__main__", "train": captured.append}
    saved_argv, sys.argv = sys.argv, [path, *argv]
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            exec(code, namespace)
    except SystemExit as stop:  # argparse: --help, or a rejected flag
        if stop.code in (0, None):
            print(output.getvalue(), end="")
            raise
        raise LaunchError(f"OpenRLHF's parser rejects the command:\n{output.getvalue().strip()}") from None
    except AssertionError as error:
        raise LaunchError(f"OpenRLHF's post-parse checks reject the command: {error}") from None
    finally:
        sys.argv = saved_argv
    # OpenRLHF only prints warnings when it changes or doubts an argument; the scripts' commands must not.
    if output.getvalue().strip():
        raise LaunchError(f"OpenRLHF's post-parse checks warn about the command:\n{output.getvalue().strip()}")
    return captured[0]


def check_train_assertions(module: str, args: SimpleNamespace) -> None:
    """Evaluate every `assert` of the CLI's `train()`, under the `if` tests that guard it, against `args`.

    `train()` checks the layout (vLLM engines x tensor parallel size = actor GPUs when colocated, the same
    nodes and GPUs for colocated models) only after Ray has started and placed GPUs, minutes into a job.
    Everything else in `train()` is left out; an `if` that needs more than `args` fails loudly here.
    """
    path, tree = _cli_source(module)
    train = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "train")

    def assertions(statements: list) -> list:
        kept = []
        for node in statements:
            if isinstance(node, ast.Assert):
                kept.append(node)
            elif isinstance(node, ast.If) and (assertions(node.body) or assertions(node.orelse)):
                kept.append(
                    ast.If(test=node.test, body=assertions(node.body) or [ast.Pass()], orelse=assertions(node.orelse))
                )
        return kept

    code = compile(ast.fix_missing_locations(ast.Module(body=assertions(train.body), type_ignores=[])), path, "exec")
    try:
        exec(code, {"args": args})
    except AssertionError as error:
        raise LaunchError(f"OpenRLHF's train() would stop the run after allocating its GPUs: {error}") from None
    except (NameError, AttributeError) as error:
        raise LaunchError(
            f"{path}: cannot evaluate train()'s assertions ({error}); is this OpenRLHF 0.11.2?"
        ) from None


def openrlhf_ray_env() -> dict[str, str]:
    """The env_vars OpenRLHF's `train()` passes to `ray.init`, evaluated from the installed source."""
    path, tree = _cli_source(PPO_MODULE)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "ray.init":
            runtime_env = next(keyword.value for keyword in node.keywords if keyword.arg == "runtime_env")
            return eval(compile(ast.Expression(runtime_env), path, "eval"), {"os": os})["env_vars"]
    raise LaunchError(f"{path}: no ray.init call found; is this OpenRLHF 0.11.2?")
