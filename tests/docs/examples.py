"""Runs the examples of a Markdown page, so that an example that stopped working fails a test.

How a page is run (docs/index.md, "Examples are tested", says the same for writers):

- A page runs top to bottom in one fresh folder: a later block may use the files an earlier one wrote,
  and every Python block of the page shares one namespace.
- Fenced blocks are run according to their info string:
    ```bash                  each command, in order (see below)
    ```python                exec'd
    ```toml file=NAME        (also json, yaml, text) written to NAME before the next block runs
    ```text                  output shown to the reader; not run
  Any other info string is an error, so that no example is left unrun by accident.
- Commands in a bash block: `\\` continues a line; quotes and `#` comments follow the shell; an unquoted
  `*`, `?` or `[` expands like a shell glob (left as it is when nothing matches).
    conceptlab ARGS          conceptlab.cli.main.main(ARGS), in this process; it must return 0
    accelerate launch ...    a subprocess with the venv's accelerate; it must exit with 0
    make TARGET              the target must exist in the Makefile and every `conceptlab` line of its
                             recipe must parse; the recipe itself is not run (it sets up the venv or
                             runs the test suite, which would run this test again)
  Anything else is an error.
- A line ending in `# needs: WHAT` (e.g. `# needs: hub` for a model from the Hugging Face Hub, which tests
  cannot download) is not run: its command must still parse, and the run reports it as skipped.
- Sizes shrink so that a page runs in seconds (SUBSTITUTIONS, INJECTED and PYTHON_SUBSTITUTIONS below).
  `scripts/docs.py images` runs pages at their real sizes (shrink=False) to make the docs' pictures.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------- sizes
# A flag's number is replaced by the tiny one, wherever the flag is given with a number.
SUBSTITUTIONS: dict[str, str] = {
    "--steps": "2",             # sampling or training steps
    "-n": "1",                  # images, seeds or prompts (generate, edit, evaluate prompts)
    "--num-images": "1",
    "--num-seeds": "1",
    "--num-prompts": "1",
    "--n": "8",                 # world export: renders (8, so that a labelled folder has more than one class)
    "--unseen": "1",            # evaluate prompts: held-out prompts
    "--class-images": "2",      # DreamBooth prior-preservation images
    "--ti-steps": "2",          # demo
    "--db-steps": "2",          # demo
    "--token-steps": "1",       # train pivotal: tokens alone, below the 2 steps
    "--epochs": "1",            # classify train
    "--refine-steps": "2",      # latent refinement before inversion
    "--checkpoint-every": "1",  # so that checkpoints are still written
    "--preview-every": "2",     # so that a preview is still made, once, at the end
    "--batch-size": "2",
    "--per-prompt": "1",        # evaluate ti: generations per prompt
    "--seeds": "1",             # evaluate dreambooth: seeds per prompt
}
# Added to a conceptlab command whose parser has the flag when the example does not give it (the defaults
# are real sizes: 30 sampling steps, 500 training steps, 300 prompts, 30 epochs).
INJECTED: dict[str, str] = {
    "--steps": "2",
    "--unseen": "1",
    "--class-images": "2",
    "--ti-steps": "2",
    "--db-steps": "2",
    "--epochs": "1",
    "--per-prompt": "1",
    "--seeds": "1",
}
# Keyword arguments in Python blocks: `name=<integer>` becomes `name=<tiny>`.
PYTHON_SUBSTITUTIONS: dict[str, str] = {
    "n": "1",
    "steps": "2",
    "num_inference_steps": "2",
    "refine_steps": "2",
    "inner_steps": "2",
    "epochs": "1",
    "class_images": "2",
    "batch_size": "2",
    "per_prompt": "1",
}
# evaluate prompts needs -n >= 1 and the world export filters need enough renders to be meaningful; none
# of the values above may be 0.

RUN_LANGUAGES = ("bash", "python")
FILE_LANGUAGES = ("toml", "json", "yaml", "text")
NEEDS = re.compile(r"#\s*needs:\s*(?P<what>.+?)\s*$")


class ExampleError(AssertionError):
    """An example failed; the message names the page and line, the command as run and its output."""


@dataclass
class Block:
    language: str
    info: str
    text: str
    line: int  # the first line of the block's content, 1-based
    file: str | None = None  # for file blocks: where to write the text


@dataclass
class Command:
    argv: list[str]
    line: int
    source: str  # the command as written (continuations joined)
    needs: str | None = None
    globs: list[bool] = field(default_factory=list)  # per token: may it expand as a glob?


@dataclass
class PageRun:
    """What a page run did: commands and Python blocks run, lines skipped, seconds taken."""

    page: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


# ---------------------------------------------------------------- Markdown
# CommonMark: at most 3 spaces of indent, and a backtick fence's info string holds no backtick.
FENCE = re.compile(r"^(?P<indent> {0,3})(?:(?P<fence>`{3,})(?P<info>[^`]*)|(?P<tilde>~{3,})(?P<tinfo>.*))$")


def blocks(markdown: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, in order."""
    out, lines, i = [], markdown.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence = m.group("fence") or m.group("tilde")
        info = (m.group("info") if m.group("fence") else m.group("tinfo")).strip()
        start, i = i + 1, i + 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            i += 1
        text = "\n".join(line[len(m.group("indent")):] for line in lines[start:i]) + "\n"
        words = info.split()
        language = words[0] if words else ""
        file = next((w.split("=", 1)[1] for w in words[1:] if w.startswith("file=")), None)
        out.append(Block(language, info, text, start + 1, file))
        i += 1
    return out


def check_block(page: str, block: Block) -> None:
    """Raises ExampleError for a block the runner would not know what to do with."""
    where = f"{page}:{block.line - 1}"
    if block.language in RUN_LANGUAGES:
        if block.file:
            raise ExampleError(f"{where}: a ```{block.language} block runs; file= is for toml/json/yaml/text blocks")
        return
    if block.language in FILE_LANGUAGES:
        if block.language != "text" and not block.file:
            raise ExampleError(f"{where}: a ```{block.language} block needs file=NAME (it is written to NAME before "
                               "the next block runs); use ```text for output that is only shown")
        return
    raise ExampleError(f"{where}: unknown code block language {block.language!r}; use one of "
                       f"{RUN_LANGUAGES + FILE_LANGUAGES} (```text for output that is not run)")


# ---------------------------------------------------------------- shell lines
def logical_lines(text: str, first_line: int) -> list[tuple[int, str]]:
    """Joins `\\`-continued lines; returns (line number, text) per command."""
    out, buf, start = [], "", None
    for k, raw in enumerate(text.splitlines()):
        if start is None:
            start = first_line + k
        code, _ = split_comment(raw)
        if code.rstrip().endswith("\\"):
            buf += code.rstrip()[:-1] + " "
            continue
        buf += raw
        if buf.strip():
            out.append((start, buf))
        buf, start = "", None
    if buf.strip():
        out.append((start, buf))
    return out


def split_comment(line: str) -> tuple[str, str]:
    """(code, comment) of a shell line; a `#` inside quotes or inside a word does not start a comment."""
    quote, i = None, 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = None
        elif c == "\\":
            i += 1
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i], line[i:]
        i += 1
    return line, ""


def shell_words(code: str) -> tuple[list[str], list[bool]]:
    """Splits like a POSIX shell (quotes, backslashes); also says per word whether it has an unquoted glob."""
    words, globs, word, has_glob, quote, started = [], [], "", False, None, False
    i = 0
    while i < len(code):
        c = code[i]
        if quote == "'":
            if c == "'":
                quote = None
            else:
                word += c
        elif quote == '"':
            if c == '"':
                quote = None
            elif c == "\\" and i + 1 < len(code) and code[i + 1] in '"\\$`':
                i += 1
                word += code[i]
            else:
                word += c
        elif c in "'\"":
            quote, started = c, True
        elif c == "\\" and i + 1 < len(code):
            i += 1
            word, started = word + code[i], True
        elif c.isspace():
            if started:
                words.append(word)
                globs.append(has_glob)
            word, has_glob, started = "", False, False
        else:
            if c in "*?[":
                has_glob = True
            word, started = word + c, True
        i += 1
    if quote:
        raise ValueError(f"unterminated {quote} quote in: {code}")
    if started:
        words.append(word)
        globs.append(has_glob)
    return words, globs


def commands(block: Block) -> list[Command]:
    out = []
    for line, text in logical_lines(block.text, block.line):
        code, comment = split_comment(text)
        words, globs = shell_words(code)
        if not words:
            continue
        m = NEEDS.search(comment)
        out.append(Command(words, line, text.strip(), m.group("what") if m else None, globs))
    return out


def expand_globs(argv: list[str], globs: list[bool], cwd: Path) -> list[str]:
    out = []
    for word, is_glob in zip(argv, globs):
        matches = sorted(glob.glob(word, root_dir=cwd)) if is_glob else []
        out += matches or [word]
    return out


# ---------------------------------------------------------------- sizes
def _canonical(flag: str) -> str:
    return flag if not flag.startswith("--") else "--" + flag[2:].replace("_", "-")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def shrink(argv: list[str], globs: list[bool] | None = None) -> tuple[list[str], list[bool]]:
    """Replaces the numbers of SUBSTITUTIONS flags (given as `--flag N` or `--flag=N`)."""
    argv, globs = list(argv), list(globs or [False] * len(argv))
    for i, word in enumerate(argv):
        name, eq, value = word.partition("=")
        tiny = SUBSTITUTIONS.get(_canonical(name))
        if tiny is None:
            continue
        if eq and _is_number(value):
            argv[i] = f"{name}={tiny}"
        elif not eq and i + 1 < len(argv) and _is_number(argv[i + 1]):
            argv[i + 1] = tiny
    return argv, globs


def subparser_for(argv: list[str]):
    """The argparse parser that handles `conceptlab ARGV` (the deepest subcommand named in it)."""
    import argparse

    from conceptlab.cli.main import build_parser

    parser = build_parser()
    for word in argv:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or word not in sub.choices:
            break
        parser = sub.choices[word]
    return parser


def inject(argv: list[str]) -> list[str]:
    """Adds INJECTED flags that the command's parser has and the example does not give."""
    parser = subparser_for(argv)
    given = {_canonical(w.partition("=")[0]) for w in argv if w.startswith("-")}
    extra = []
    for flag, value in INJECTED.items():
        for action in parser._actions:
            names = {_canonical(s) for s in action.option_strings}
            if flag in names and not names & given:
                extra += [flag, value]
    return argv + extra


def shrink_python(source: str) -> str:
    names = "|".join(PYTHON_SUBSTITUTIONS)
    return re.sub(rf"\b({names})(\s*=\s*)\d+\b", lambda m: m.group(1) + m.group(2) + PYTHON_SUBSTITUTIONS[m.group(1)],
                  source)


# ---------------------------------------------------------------- running
def _parse_only(argv: list[str], where: str) -> None:
    """Raises ExampleError when the CLI's parser rejects `conceptlab ARGV` (a renamed or removed flag)."""
    from conceptlab.cli.main import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as e:
        if e.code:
            raise ExampleError(f"{where}: `conceptlab {' '.join(argv)}` does not parse:\n{err.getvalue()}") from None


def run_conceptlab(argv: list[str], where: str, source: str) -> str:
    """conceptlab.cli.main.main(argv) in this process; returns its output, raises ExampleError unless it returns 0."""
    from conceptlab.cli.main import main

    out = io.StringIO()
    rc = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = main(argv)
    except SystemExit as e:  # argparse: a flag that no longer exists
        rc = e.code
    except Exception as e:  # noqa: BLE001 - reported with the example's place
        raise ExampleError(f"{where}: {source}\nran as: conceptlab {' '.join(argv)}\nraised {e!r}\n"
                           f"{out.getvalue()[-3000:]}") from e
    if rc not in (0, None):
        raise ExampleError(f"{where}: {source}\nran as: conceptlab {' '.join(argv)}\nreturned {rc}\n"
                           f"{out.getvalue()[-3000:]}")
    return out.getvalue()


def make_recipe(target: str) -> list[str]:
    """The recipe lines of a Makefile target; raises ExampleError when the target does not exist."""
    lines = (REPO / "Makefile").read_text().splitlines()
    for k, line in enumerate(lines):
        if re.match(rf"^{re.escape(target)}\s*:", line):
            recipe = []
            for nxt in lines[k + 1:]:
                if not nxt.startswith("\t"):
                    break
                recipe.append(nxt.strip())
            return recipe
    raise ExampleError(f"`make {target}`: the Makefile has no target {target!r}")


def check_make(argv: list[str], where: str) -> None:
    for target in argv[1:] or ["setup"]:
        for line in make_recipe(target):
            words, _ = shell_words(line.lstrip("@"))
            if words and words[0].endswith("bin/conceptlab"):
                _parse_only(words[1:], f"{where} (make {target})")


def run_subprocess(argv: list[str], cwd: Path, where: str, source: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    exe = Path(sys.executable).parent / argv[0]
    cmd = [str(exe) if exe.exists() else argv[0], *argv[1:]]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise ExampleError(f"{where}: {source}\nran as: {' '.join(cmd)}\nexit {proc.returncode}\n"
                           f"{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout


def _conceptlab_part(argv: list[str]) -> int | None:
    """Where the conceptlab arguments start in an `accelerate launch ... -m conceptlab.cli.main ARGS` line."""
    for i, word in enumerate(argv[:-1]):
        if word == "-m" and argv[i + 1] == "conceptlab.cli.main":
            return i + 2
    return None


def run_command(cmd: Command, cwd: Path, where: str, shrink_sizes: bool) -> str:
    """Runs one command of a bash block; returns its output (or a note for lines that are only checked)."""
    argv, globs = (shrink(cmd.argv, cmd.globs) if shrink_sizes else (cmd.argv, cmd.globs))
    head = argv[0]
    if head == "conceptlab":
        args = argv[1:]
        if cmd.needs:
            _parse_only(args, where)
            return f"skipped (needs {cmd.needs})"
        args = inject(args) if shrink_sizes else args
        return run_conceptlab(expand_globs(args, globs[1:] + [False] * (len(args) - len(globs) + 1), cwd), where,
                              cmd.source)
    if head == "make":
        check_make(argv, where)
        return "make: target and its conceptlab lines checked"
    if argv[:2] == ["accelerate", "launch"]:
        k = _conceptlab_part(argv)
        if k is None:
            raise ExampleError(f"{where}: `accelerate launch` examples run `-m conceptlab.cli.main ...`: {cmd.source}")
        if cmd.needs:
            _parse_only(argv[k:], where)
            return f"skipped (needs {cmd.needs})"
        args = inject(argv[k:]) if shrink_sizes else argv[k:]
        full = argv[:k] + args
        return run_subprocess(expand_globs(full, globs + [False] * (len(full) - len(globs)), cwd), cwd, where,
                              cmd.source)
    if cmd.needs:
        return f"skipped (needs {cmd.needs})"
    raise ExampleError(f"{where}: no runner for `{head}` (examples run conceptlab, accelerate launch or make; "
                       f"end the line with `# needs: WHAT` if it cannot run in a test): {cmd.source}")


def run_page(page: Path, cwd: Path, shrink_sizes: bool = True, namespace: dict | None = None,
             until=None, log=None) -> PageRun:
    """Runs every example of `page` in folder `cwd` (which the caller makes the working directory).

    `until(cwd) -> bool` stops the run once it is true after a block (scripts/docs.py images uses it).
    """
    page = Path(page)
    name = page.relative_to(REPO) if page.is_relative_to(REPO) else page
    run, t0 = PageRun(page), time.perf_counter()
    namespace = namespace if namespace is not None else {"__name__": "__docs__"}
    for block in blocks(page.read_text()):
        check_block(str(name), block)
        if block.file:
            path = cwd / block.file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.text)
            run.ran.append(f"{name}:{block.line}: wrote {block.file}")
        elif block.language == "bash":
            for cmd in commands(block):
                where = f"{name}:{cmd.line}"
                t = time.perf_counter()
                note = run_command(cmd, cwd, where, shrink_sizes)
                source = " ".join(cmd.source.split())
                if note.startswith("skipped"):
                    run.skipped.append(f"{where}: {source}")
                    label = f"{where}: {note}"
                else:
                    label = f"{where}: {source} ({time.perf_counter() - t:.1f} s)"
                    run.ran.append(label)
                if log:
                    log(label)
        elif block.language == "python":
            source = shrink_python(block.text) if shrink_sizes else block.text
            where = f"{name}:{block.line}"
            t = time.perf_counter()
            try:
                exec(compile(source, where, "exec"), namespace)  # noqa: S102 - the docs' own examples
            except Exception as e:
                raise ExampleError(f"{where}: the Python block raised {e!r}\n{source}") from e
            run.ran.append(f"{where}: python block ({time.perf_counter() - t:.1f} s)")
            if log:
                log(run.ran[-1])
        if until is not None and until(cwd):
            break
    run.seconds = time.perf_counter() - t0
    return run
