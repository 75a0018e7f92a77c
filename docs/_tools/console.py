"""Run a documentation page's console sessions top to bottom, as a reader would.

One walker serves both ``tests/test_docs.py`` (which checks that the page
shows what the commands print) and ``regen_console.py`` (which rewrites the
outputs from the current code), so the two cannot run the page differently.

The page is read in order, in one folder:

``.. code-block:: console``
    Each ``$ COMMAND`` line runs in a shell, and the lines after it, up to
    the next ``$`` line, are what it prints (standard output, then standard
    error). ``cd DIR`` changes the folder of what follows, and ``$?`` is the
    exit code of the command before, as in one shell; ``pip install`` and
    ``python -m venv`` lines are skipped (the environment is the one the
    walker runs in).

``.. code-block:: pycon``
    Each ``>>>`` example runs in one Python process (a fresh one per block),
    in the current folder, and must print what follows it, as in a doctest.

Setup steps the page does not run as commands are reST comments, invisible
in the built page, written right where the step happens (the comment, then a
blank line)::

    .. crmkit-test: append-toml
        The next code block (a ``toml`` one) is appended to ``crmkit.toml``.

    .. crmkit-test: set-toml
        Each table of the next code block (a ``toml`` one) replaces the table
        of the same name in ``crmkit.toml``, as an editor would; a table the
        file does not have yet is appended.

    .. crmkit-test: write-file PATH
        The next code block is written to PATH (its ``:caption:``, when it
        has one, must be PATH).

    .. crmkit-test: run COMMAND
        A hidden shell step; it may go on over indented lines, and must
        succeed. What it prints is not shown.

    .. crmkit-test: run-python
        The next code block (a ``python`` one) runs as a script in the
        current folder; the code block after it (a ``text`` one) is what it
        prints.

Every command runs with ``COLUMNS=100`` and ``NO_COLOR=1``, without any
``CRMKIT_*`` variable of the caller and with the running interpreter's
folder first in ``PATH``, so tables wrap and errors read the same
everywhere. :func:`normalized` hides what differs from run to run: the
temporary folder, timestamps, dates and times of day.

Starting Python and importing crmkit takes most of a short command's time,
so a plain ``crmkit ARGS`` line (no pipe, redirection, variable, glob or
other shell syntax: see :func:`plain_crmkit`; ``> /dev/null`` at the end is
fine) runs in the walker's own process, through ``crmkit.cli.main``, with
everything a new process would see put in place for the call: the
environment, the folder, ``sys.argv``, empty standard input, standard output
and error as UTF-8 pipes (read back as ``subprocess`` reads them), Python's
default warning filters, and the ``PYTHONPATH`` entries on ``sys.path``.
What it prints and its exit code are those of ``crmkit`` run as a command;
``echo $?`` prints the exit code of the line before, as a shell does.
Anything else runs in a shell, as does every command when
``DOCS_CONSOLE=subprocess`` is set (or ``walk(..., in_process=False)``).
"""

from __future__ import annotations

import contextlib
import doctest
import io
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: The comment that marks a setup step: ``.. crmkit-test: ACTION [ARGUMENT]``.
DIRECTIVE = re.compile(r"^\.\. crmkit-test: (?P<action>[\w-]+)(?: +(?P<argument>.*))?$")
CODE_BLOCK = re.compile(r"^(?P<indent> *)\.\. code-block:: *(?P<lang>\S+) *$")
OPTION = re.compile(r"^ +:(?P<name>[\w-]+):(?: +(?P<value>.*))?$")
#: Console lines that describe the environment rather than the deployment.
SKIPPED = ("pip install", "python -m venv")
ACTIONS = ("append-toml", "set-toml", "write-file", "run", "run-python")
TOML_TABLE = re.compile(r"^\[\[?\s*(?P<name>[^\]]+?)\s*\]\]?\s*(?:#.*)?$")
TIMEOUT = 300
#: How a rewritten page writes the temporary folder it was run in.
SHOWN_FOLDER = "/tmp/crmkit-docs"
#: ``DOCS_CONSOLE=subprocess``: run every command in its own process.
MODE_VARIABLE = "DOCS_CONSOLE"
#: Characters a shell treats specially outside quotes (and inside double quotes).
_SHELL_SPECIAL = set("|&;<>()$`\\*?[]{}~!#\n\r\t")
_DOUBLE_QUOTED_SPECIAL = set("$`\\!")
#: ``crmkit ARGS > /dev/null``: run in process too, its standard output dropped.
_TO_DEV_NULL = re.compile(r"(?P<command>[^>]*?) *> */dev/null *")
#: Python's warning filters in a new process (no -W, no PYTHONWARNINGS, not -X dev).
_DEFAULT_FILTERS = (
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, ""),
    ("ignore", PendingDeprecationWarning, ""),
    ("ignore", ImportWarning, ""),
    ("ignore", ResourceWarning, ""),
)


class PageError(Exception):
    """The page cannot be walked: a step is malformed, or a hidden step failed."""


@dataclass
class Block:
    """A ``.. code-block::`` of the page."""

    lang: str
    #: 1-based line of the ``.. code-block::`` directive
    line: int
    #: the body's lines in the page, as ``lines[start:end]`` (0-based)
    start: int
    end: int
    #: the indentation of the body
    indent: str
    #: the body, dedented, without trailing blank lines
    text: str
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class Directive:
    """A ``.. crmkit-test:`` comment."""

    action: str
    argument: str
    line: int


@dataclass
class Shown:
    """One thing the page shows the output of, and what running it printed."""

    block: Block
    #: the command, pycon example or script, as the page writes it (prompts included)
    source: str
    expected: str
    actual: str

    @property
    def matches(self) -> bool:
        return normalized(self.actual) == normalized(self.expected)


@dataclass
class Walk:
    """What walking a page did."""

    folder: Path
    shown: list[Shown] = field(default_factory=list)
    #: console lines not run (``pip install ...``)
    skipped: list[str] = field(default_factory=list)
    #: code blocks neither run nor used by a step (for example a formula)
    unchecked: list[Block] = field(default_factory=list)
    #: the hidden steps, as ``(action, argument)``
    steps: list[tuple[str, str]] = field(default_factory=list)
    #: the exit code of the last console command
    status: int = 0

    @property
    def mismatches(self) -> list[Shown]:
        return [s for s in self.shown if not s.matches]


# -- reading a page -------------------------------------------------------------------
def parse(text: str) -> list[Block | Directive]:
    """The page's code blocks and ``crmkit-test`` comments, in the page's order."""
    lines = text.splitlines()
    items: list[Block | Directive] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        found = DIRECTIVE.match(line)
        if found:
            number, argument = i + 1, [found.group("argument") or ""]
            i += 1
            while i < len(lines) and (lines[i].startswith(" ") or not lines[i].strip()):
                if not lines[i].strip() and not _continues(lines, i):
                    break
                argument.append(lines[i])
                i += 1
            body = argument[0] + "\n" + textwrap.dedent("\n".join(argument[1:]))
            items.append(Directive(found.group("action"), body.strip(), number))
            continue
        found = CODE_BLOCK.match(line)
        if not found:
            i += 1
            continue
        start_line, depth = i + 1, len(found.group("indent"))
        options: dict[str, str] = {}
        i += 1
        while i < len(lines) and OPTION.match(lines[i]):
            option = OPTION.match(lines[i])
            assert option is not None
            options[option.group("name")] = option.group("value") or ""
            i += 1
        while i < len(lines) and not lines[i].strip():
            i += 1
        start = i
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > depth):
            i += 1
        end = i
        while end > start and not lines[end - 1].strip():
            end -= 1
        body_lines = lines[start:end]
        indent = min((_indent(x) for x in body_lines if x.strip()), default=depth + 3)
        items.append(
            Block(
                lang=found.group("lang"),
                line=start_line,
                start=start,
                end=end,
                indent=" " * indent,
                text="\n".join(x[indent:] for x in body_lines),
                options=options,
            )
        )
    return items


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _continues(lines: list[str], i: int) -> bool:
    """Whether the blank line ``i`` is followed by more indented lines of the same comment."""
    j = i
    while j < len(lines) and not lines[j].strip():
        j += 1
    return j < len(lines) and lines[j].startswith(" ")


def literal_blocks(text: str) -> list[int]:
    """1-based lines of paragraphs that end in ``::`` (a literal block that nothing runs)."""
    lines = text.splitlines()
    return [
        n
        for n, line in enumerate(lines, 1)
        if line.rstrip().endswith("::")
        and not line.lstrip().startswith("..")
        and n < len(lines)
        and not lines[n].strip()
    ]


# -- running a page -------------------------------------------------------------------
def page_env() -> dict[str, str]:
    """The environment of every step: the caller's, without CRMKIT_*, 100 columns, no colour.

    The folder of the running interpreter comes first in ``PATH``, so that
    ``crmkit`` and ``python`` are those of the environment under test, even
    when it is not activated.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    path = [str(Path(sys.executable).parent), env.get("PATH", "")]
    env.update(COLUMNS="100", NO_COLOR="1", PATH=os.pathsep.join(p for p in path if p))
    return env


def _run(
    command: str | list[str], cwd: Path, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (a shell line, or an argument list) as the page's reader would."""
    return subprocess.run(
        command,
        shell=isinstance(command, str),
        input=stdin,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=TIMEOUT,
    )


def plain_crmkit(command: str) -> list[str] | None:
    """The arguments of ``command`` when it is ``crmkit ARGS`` with nothing else for a shell.

    Quotes are fine (``--note "search ads"``); anything a shell would expand
    or interpret (pipes, redirections, ``&&``, ``;``, variables, globs, ``~``,
    comments, backslashes, an ``A=B`` prefix) gives None: such a line runs in
    a shell.
    """
    quote = ""
    for char in command:
        if quote == "'":
            quote = "" if char == "'" else quote
        elif quote == '"':
            if char in _DOUBLE_QUOTED_SPECIAL:
                return None
            quote = "" if char == '"' else quote
        elif char in "'\"":
            quote = char
        elif char in _SHELL_SPECIAL:
            return None
    if quote:
        return None
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    return argv[1:] if argv and argv[0] == "crmkit" else None


def _crmkit_script(env: dict[str, str]) -> str | None:
    """The ``crmkit`` a shell with ``env`` runs, if it is this interpreter's; else None."""
    import shutil

    found = shutil.which("crmkit", path=env.get("PATH"))
    ours = Path(sys.executable).parent / "crmkit"
    if found is None or Path(found) != ours:
        return None
    try:
        import crmkit.cli  # noqa: F401
    except ImportError:
        return None
    return found


class _Pipe(io.TextIOWrapper):
    """A standard stream as a new process has it when its output goes to a pipe."""

    def __init__(self, name: str, errors: str) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8", errors=errors)
        self._name = name

    @property
    def name(self) -> str:  # type: ignore[override]
        return self._name

    def text(self) -> str:
        """What was written, read back as ``subprocess.run(text=True)`` reads a pipe."""
        self.flush()
        data = self.buffer.getvalue()  # type: ignore[attr-defined]
        return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


@contextlib.contextmanager
def _as_new_process(argv: list[str], cwd: Path, env: dict[str, str]) -> Iterator[None]:
    """Environment, folder, ``sys.argv``, ``sys.path`` and warnings of a new process; restored."""
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    saved_argv, saved_path = sys.argv, list(sys.path)
    added = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    try:
        for name in [n for n in os.environ if n not in env]:
            del os.environ[name]
        os.environ.update(env)
        os.chdir(cwd)
        sys.argv = argv
        sys.path[:0] = added
        with warnings.catch_warnings():
            warnings.resetwarnings()
            for action, category, module in reversed(_DEFAULT_FILTERS):
                warnings.filterwarnings(action, category=category, module=module)
            yield
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
        os.chdir(saved_cwd)
        for name in [n for n in os.environ if n not in saved_env]:
            del os.environ[name]
        os.environ.update(saved_env)


def _run_in_process(
    script: str, args: list[str], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """``crmkit ARGS`` through ``crmkit.cli.main`` in this process, as if it were its own."""
    from crmkit.cli import main

    stdin = io.TextIOWrapper(io.BytesIO(b""), encoding="utf-8")
    stdout, stderr = _Pipe("<stdout>", "strict"), _Pipe("<stderr>", "backslashreplace")
    streams = sys.stdin, sys.stdout, sys.stderr
    code: int
    with _as_new_process([script, *args], cwd, env):
        sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
        try:
            main(args)
            code = 0
        except SystemExit as exc:  # what the interpreter does with sys.exit(code)
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code & 0xFF
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except Exception:  # an uncaught error: the traceback, exit code 1
            traceback.print_exc()
            code = 1
        finally:
            sys.stdin, sys.stdout, sys.stderr = streams
    return subprocess.CompletedProcess([script, *args], code, stdout.text(), stderr.text())


def _command(
    command: str, status: int, cwd: Path, env: dict[str, str], in_process: bool
) -> subprocess.CompletedProcess[str]:
    """Run a console line or a hidden step's script; ``status`` is ``$?`` of the line before.

    A script of lines that can all run in this process (after an optional
    ``set -e``) runs line by line here, as a shell would run it; anything
    else runs in a shell.
    """
    lines = [x.strip() for x in command.strip().splitlines()]
    errexit = len(lines) > 1 and lines[0] == "set -e"
    lines = lines[1:] if errexit else lines
    if in_process and lines:
        steps = [_in_process_step(x, env) for x in lines]
        if all(step is not None for step in steps):
            out, err = [], []
            for step in steps:
                assert step is not None
                run = step(status, cwd)
                out.append(run.stdout)
                err.append(run.stderr)
                status = run.returncode
                if errexit and status:
                    break
            return subprocess.CompletedProcess(command, status, "".join(out), "".join(err))
    # "$?" is the exit code of the command before, as in one shell
    return _run(f"(exit {status}); {command}" if status else command, cwd, env)


def _in_process_step(
    line: str, env: dict[str, str]
) -> Callable[[int, Path], subprocess.CompletedProcess[str]] | None:
    """How to run ``line`` in this process (given ``$?`` and the folder), or None: a shell must."""
    if line == "echo $?":
        return lambda status, cwd: subprocess.CompletedProcess(line, 0, f"{status}\n", "")
    quiet = _TO_DEV_NULL.fullmatch(line)
    args = plain_crmkit(quiet.group("command") if quiet else line)
    script = _crmkit_script(env) if args is not None else None
    if args is None or script is None:
        return None

    def run(status: int, cwd: Path) -> subprocess.CompletedProcess[str]:
        done = _run_in_process(script, args, cwd, env)
        if quiet:  # "> /dev/null": what it prints to standard output is dropped
            done.stdout = ""
        return done

    return run


def run_line(
    command: str, cwd: Path, *, in_process: bool | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one console line in ``cwd`` as a page's ``$`` line runs (for a test's own setup)."""
    if in_process is None:
        in_process = os.environ.get(MODE_VARIABLE, "").lower() != "subprocess"
    return _command(command, 0, cwd, page_env(), in_process)


def walk(text: str, folder: Path, *, in_process: bool | None = None) -> Walk:
    """Run the page ``text`` in ``folder`` (which should be empty), top to bottom.

    ``in_process``: run plain ``crmkit`` lines in this process (the default,
    unless ``DOCS_CONSOLE=subprocess`` is set), or every line in a shell.
    """
    if in_process is None:
        in_process = os.environ.get(MODE_VARIABLE, "").lower() != "subprocess"
    env = page_env()
    result = Walk(folder=folder)
    cwd = folder
    items = parse(text)
    i = 0
    while i < len(items):
        item = items[i]
        i += 1
        if isinstance(item, Directive):
            i = _step(item, items, i, cwd, env, result, in_process)
        elif item.lang == "console":
            cwd = _console(item, cwd, env, result, in_process)
        elif item.lang == "pycon":
            _pycon(item, cwd, env, result)
        else:
            result.unchecked.append(item)
    return result


def _step(
    step: Directive,
    items: list[Block | Directive],
    i: int,
    cwd: Path,
    env: dict[str, str],
    result: Walk,
    in_process: bool,
) -> int:
    """Perform the hidden ``step``; ``items[i]`` is what follows it. Return the next index."""
    if step.action not in ACTIONS:
        raise PageError(f"line {step.line}: unknown step {step.action!r}")
    result.steps.append((step.action, step.argument))
    if step.action == "run":
        _hidden(step, cwd, env, in_process)
        return i
    target = _next_block(items, i, step)
    if step.action in ("append-toml", "set-toml"):
        _expect(target, "toml", step)
        config = cwd / "crmkit.toml"
        if not config.is_file():
            raise PageError(f"line {step.line}: no crmkit.toml in {cwd}")
        old = config.read_text("utf-8")
        if step.action == "append-toml":
            new = old + "\n" + target.text + "\n"
        else:
            new = set_toml_tables(old, target.text)
        config.write_text(new, encoding="utf-8")
        return i + 1
    if step.action == "write-file":
        caption = target.options.get("caption")
        if not step.argument or (caption is not None and caption != step.argument):
            raise PageError(f"line {step.line}: write-file {step.argument!r}, caption {caption!r}")
        path = cwd / step.argument
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(target.text + "\n", encoding="utf-8")
        return i + 1
    # run-python: the script, then what it prints
    _expect(target, "python", step)
    printed = _next_block(items, i + 1, step)
    _expect(printed, "text", step)
    run = _run([sys.executable, "-c", target.text], cwd, env)
    result.shown.append(Shown(printed, target.text, printed.text, run.stdout + run.stderr))
    return i + 2


def _toml_tables(text: str) -> list[tuple[str | None, list[str]]]:
    """``(table name, lines)`` of each table of a TOML text; the first name may be None."""
    tables: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in text.splitlines():
        found = TOML_TABLE.match(line)
        if found:
            tables.append((re.sub(r"\s+", "", found.group("name")), []))
        tables[-1][1].append(line)
    return tables


def set_toml_tables(config: str, block: str) -> str:
    """``config`` with each table of ``block`` in place of its namesake (or appended)."""
    tables = _toml_tables(config)
    for name, lines in _toml_tables(block):
        if name is None:
            if any(x.strip() for x in lines):
                raise PageError("set-toml: the block has keys outside a table")
            continue
        names = [n for n, _ in tables]
        if name in names:
            old = tables[names.index(name)][1]
            trailing = len(old) - len("\n".join(old).rstrip().splitlines())
            tables[names.index(name)] = (name, [*_trimmed(lines), *[""] * trailing])
        else:
            tables.append((name, ["", *_trimmed(lines)]))
    return "\n".join(x for _, lines in tables for x in lines).rstrip("\n") + "\n"


def _trimmed(lines: list[str]) -> list[str]:
    return "\n".join(lines).strip("\n").splitlines()


def _next_block(items: list[Block | Directive], i: int, step: Directive) -> Block:
    if i >= len(items) or not isinstance(items[i], Block):
        raise PageError(f"line {step.line}: {step.action} must come right before a code block")
    found = items[i]
    assert isinstance(found, Block)
    return found


def _expect(block: Block, lang: str, step: Directive) -> None:
    if block.lang != lang:
        raise PageError(
            f"line {step.line}: {step.action} needs a {lang} block, not {block.lang} "
            f"(line {block.line})"
        )


def _hidden(step: Directive, cwd: Path, env: dict[str, str], in_process: bool) -> None:
    run = _command(step.argument, 0, cwd, env, in_process)
    if run.returncode:
        raise PageError(
            f"line {step.line}: hidden step failed ({run.returncode}): {step.argument}\n"
            f"{run.stdout}{run.stderr}"
        )


def console_sessions(text: str) -> list[tuple[str, str]]:
    """``(command, output)`` for each ``$`` line of a console block's body."""
    found: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            found.append((line[2:], []))
        elif found:
            found[-1][1].append(line)
    return [(command, "\n".join(out).rstrip()) for command, out in found]


def _console(block: Block, cwd: Path, env: dict[str, str], result: Walk, in_process: bool) -> Path:
    for command, expected in console_sessions(block.text):
        if command.startswith(SKIPPED):
            result.skipped.append(command)
            continue
        if command.startswith("cd "):
            cwd = (cwd / command[3:].strip()).resolve()
            result.status = 0
            result.shown.append(Shown(block, f"$ {command}", expected, ""))
            continue
        run = _command(command, result.status, cwd, env, in_process)
        result.status = run.returncode
        result.shown.append(Shown(block, f"$ {command}", expected, run.stdout + run.stderr))
    return cwd


#: Runs pycon examples (a JSON list of sources on stdin) in one namespace, like doctest.
_PYCON = r"""
import contextlib, io, json, sys, traceback
namespace = {"__name__": "__main__"}
printed = []
for source in json.load(sys.stdin):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            exec(compile(source, "<page>", "single"), namespace)
        except Exception as exc:
            last = "".join(traceback.format_exception_only(exc)).rstrip()
            print("Traceback (most recent call last):\n  ...\n" + last)
    printed.append(out.getvalue())
json.dump(printed, sys.stdout)
"""


def _pycon(block: Block, cwd: Path, env: dict[str, str], result: Walk) -> None:
    examples = doctest.DocTestParser().get_examples(block.text)
    run = _run([sys.executable, "-c", _PYCON], cwd, env, json.dumps([e.source for e in examples]))
    if run.returncode:
        raise PageError(f"line {block.line}: the pycon block could not run:\n{run.stderr}")
    for example, printed in zip(examples, json.loads(run.stdout), strict=True):
        source = example.source.rstrip("\n").splitlines()
        prompted = "\n".join([f">>> {source[0]}", *(f"... {x}" for x in source[1:])])
        result.shown.append(Shown(block, prompted, example.want.rstrip("\n"), printed))


def normalized(output: str) -> str:
    """``output`` without what differs from run to run: the folder, timestamps, dates, times."""
    output = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", "<time>", output)
    # tables show times as "2026-11-22 21:47" in the deployment's zone, and may wrap them
    output = re.sub(r"\b\d{4}-\d\d-\d\d\b", "<date>", output)
    output = re.sub(r"\b\d\d:\d\d\b", "<hh:mm>", output)
    output = re.sub(r"/\S*?/mycrm\b", "<dir>/mycrm", output)
    return "\n".join(line.rstrip() for line in output.splitlines()).strip()


# -- rewriting a page -----------------------------------------------------------------
def rewritten(text: str, walked: Walk, *, folder: str = SHOWN_FOLDER) -> str:
    """``text`` with every output that changed replaced by what the walk printed.

    Outputs equal to the page's once normalized are kept as written, so that a
    run only changes what the code changed, not the timestamps. The walk's
    temporary folder is written as ``folder``.
    """
    lines = text.splitlines()
    by_block: dict[int, list[Shown]] = {}
    blocks: dict[int, Block] = {}
    for shown in walked.shown:
        by_block.setdefault(shown.block.start, []).append(shown)
        blocks[shown.block.start] = shown.block
    for start in sorted(by_block, reverse=True):
        block = blocks[start]
        body = _body(block, by_block[start], {str(walked.folder.resolve()): folder})
        lines[block.start : block.end] = [
            (block.indent + x).rstrip() if x.strip() else "" for x in body
        ]
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def _body(block: Block, shown: list[Shown], paths: dict[str, str]) -> list[str]:
    def output(s: Shown) -> list[str]:
        kept = s.expected if s.matches else s.actual.rstrip("\n")
        if not s.matches:
            for real, written in paths.items():
                kept = kept.replace(real, written)
        return [x.rstrip() for x in kept.splitlines()] if kept.strip() else []

    if block.lang == "text":  # what a run-python script prints
        [only] = shown
        return output(only)
    body: list[str] = []
    if block.lang == "console":  # the skipped lines (pip install ...) stay as they are
        queue = list(shown)
        for command, expected in console_sessions(block.text):
            if command.startswith(SKIPPED):
                body.extend([f"$ {command}", *expected.splitlines()])
            else:
                done = queue.pop(0)
                body.extend([done.source, *output(done)])
        return body
    for done in shown:
        body.extend([*done.source.splitlines(), *output(done)])
    return body
