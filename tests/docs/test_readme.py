"""The README's commands run: every `bash` and `python` block in order on tiny sizes, every `star` command parsed
against the CLI, and the command map agrees with each command's `--help` (README section "How this guide is tested")."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
import typer.main

from cli import app
from tests.fixtures.data_files import REPO_ROOT

REPO = REPO_ROOT
README = REPO / "README.md"
SKIP = re.compile(r"<!-- readme-test: skip (.+?) -->")
# The tiny variant: options appended to each command (the last occurrence of an option wins).
TINY = {
    "star extract": ["--frames", "4", "--size", "32", "--device", "cpu"],
    "star train": ["--epochs", "1", "--batch-size", "2", "--workers", "0", "--device", "cpu"],
    "star evaluate": ["--workers", "0", "--device", "cpu"],
    "star predict": ["--device", "cpu"],
    "star explain": ["--device", "cpu"],
    "python examples/make_dataset.py": ["--frames", "16"],
}


@dataclass(frozen=True)
class Block:
    line: int  # where the block starts in README.md
    text: str
    skip: str  # the reason it is not run, or ""
    language: str = "bash"  # bash, or python: run by this interpreter in the same folder, after the blocks above it


def bash_blocks() -> list[Block]:
    lines = README.read_text().splitlines()
    blocks, previous = [], ""
    i = 0
    while i < len(lines):
        if lines[i].strip() in ("```bash", "```python"):
            end = lines.index("```", i + 1)
            reason = SKIP.fullmatch(previous.strip())
            text, skip = "\n".join(lines[i + 1 : end]), reason.group(1) if reason else ""
            blocks.append(Block(line=i + 1, text=text, skip=skip, language=lines[i].strip().removeprefix("```")))
            i = end
        elif lines[i].strip():
            previous = lines[i]
        i += 1
    return blocks


def star_commands(block: Block) -> list[list[str]]:
    """Every `star ...` (or `torchrun ... -m cli ...`) command line of a block, as arguments after `star`."""
    commands = []
    for line in block.text.splitlines() if block.language == "bash" else ():
        words = shlex.split(line, comments=True)
        if "star" in words:
            commands.append(words[words.index("star") + 1 :])
        elif words[:1] == ["torchrun"] and "cli" in words:
            commands.append(words[words.index("cli") + 1 :])
    return commands


def tiny(line: str) -> str:
    """The line with the tiny options appended to its command, before any comment."""
    for command, options in TINY.items():
        match = re.match(rf"^(\s*{re.escape(command)}(?![\w-])[^#]*?)(\s*#.*)?$", line)
        if match:
            return f"{match.group(1)} {' '.join(options)}{match.group(2) or ''}"
    return line


def _parse(args: list[str]) -> None:
    """Parse a `star` command line without running it: unknown commands, options or values raise click errors."""
    command, ctx, rest = typer.main.get_command(app), None, list(args)
    while hasattr(command, "commands"):  # a group: the next word names its subcommand
        if not rest:
            raise typer.BadParameter(f"`{command.name}` needs a subcommand")
        name, command, rest = command.resolve_command(command.context_class(command, parent=ctx), rest)
        ctx = command.context_class(command, info_name=name, parent=ctx)
    command.make_context(command.name, rest, parent=ctx)  # parses and checks every option and argument


BLOCKS = bash_blocks()


def test_the_readme_has_runnable_and_skipped_blocks():
    assert any(not block.skip for block in BLOCKS) and any(block.skip for block in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{block.line}" for block in BLOCKS])
def test_every_star_command_parses(block):
    for args in star_commands(block):
        try:
            _parse(args)
        except typer.TyperException as err:  # Typer's click errors: no such command, option or value
            pytest.fail(f"README line {block.line}: `star {' '.join(args)}`: {err}")


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.skip], ids=[f"line{b.line}" for b in BLOCKS if b.skip])
def test_skipped_blocks_say_why(block):
    pytest.skip(f"README line {block.line}: {block.skip}")


def chains() -> dict[str, list[Block]]:
    """The runnable blocks as independent chains, each run in a folder of its own: a block whose first line sets
    PENN= is a chain by itself (it needs only the Penn Action files); every other block follows the ones above it."""
    runnable = [block for block in BLOCKS if not block.skip]
    penn = {f"penn-line{block.line}": [block] for block in runnable if block.text.startswith("PENN=")}
    return {"guide": [block for block in runnable if not block.text.startswith("PENN=")], **penn}


CHAINS = chains()


def test_every_runnable_block_is_in_one_chain():
    runnable = sorted(block.line for block in BLOCKS if not block.skip)
    assert sorted(block.line for chain in CHAINS.values() for block in chain) == runnable and len(CHAINS) > 1


@pytest.mark.slow
@pytest.mark.parametrize("chain", list(CHAINS))
def test_the_runnable_blocks_run_in_order(chain, tmp_path):
    """The guide's commands, as a reader would paste them, in one folder: each block must exit 0. A block whose
    first line sets PENN= runs on a small labels-only copy of real Penn Action files with a test split."""
    from tests.fixtures.data_files import real_penn_copy

    (tmp_path / "examples").symlink_to(REPO / "examples")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for block in CHAINS[chain]:
        lines = [tiny(line) for line in block.text.splitlines()]
        if lines[0].startswith("PENN="):
            penn = real_penn_copy(tmp_path / "penn", test_ids=("0002", "0174", "0345", "0481", "0701"))
            (penn / "labels" / "1516.mat").unlink()  # its failure makes `star extract` exit 3, which `set -e` stops at
            lines[0] = f"PENN={penn}"
        script = "set -euo pipefail\n" + "\n".join(lines) if block.language == "bash" else block.text
        command = ["bash", "-c", script] if block.language == "bash" else [sys.executable, "-c", script]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, (
            f"README block at line {block.line} failed (exit {result.returncode}):\n{script}\n"
            f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
        )


def test_the_command_map_is_each_commands_help():
    text = README.read_text()
    group = typer.main.get_command(app)

    def commands(cmd, prefix):
        for name, sub in cmd.commands.items():
            if hasattr(sub, "commands"):
                yield from commands(sub, f"{prefix}{name} ")
            else:
                yield f"{prefix}{name}", (sub.help or "").split("\n\n")[0].replace("\n", " ")

    for name, summary in commands(group, ""):
        row = re.search(rf"^\| `star {re.escape(name)}` \|.*$", text, flags=re.MULTILINE)
        assert row, f"the command map has no row for `star {name}`"
        assert summary in row.group(0), f"`star {name}`: the map does not say what --help says: {summary!r}"


def test_every_cache_failure_reason_is_explained():
    from pipeline.sources.datasets.records import OK, STATUSES

    section = README.read_text().split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    for status in STATUSES:
        if status != OK:
            assert f"`{status}`" in section, f"Troubleshooting does not explain the failure reason {status!r}"
