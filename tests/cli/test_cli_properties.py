"""Property: whatever argument list a user types, every subcommand ends with exit 0, 1 or 2 and no traceback.

Each example is built from the command's own options (read from the typer app, so a new flag is covered
without touching this file): a few options with values drawn from a hostile pool (empty, negative, zero,
NaN, infinite, overflowing, non-numeric, paths that do not exist or cannot be written, odd characters),
plus at least one value that must be refused before any work starts (an unknown option, or a number option
given something that is not a valid number for it) — so that no example runs a real profile or search.
"""

from __future__ import annotations

import inspect
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.main import get_command

from conftest import invoke
from hwnas.cli import app

_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*File \".*\", line \d+", re.M)
HOSTILE = ["", " ", "-1", "0", "-0", "nan", "-nan", "inf", "-inf", "1e999", "abc", "1,5", "0x10", "3", "9" * 40,
           "cpu", "digits", "bogus:x", "/proc/version/x", "nowhere.json", ".", "..", "../../etc/passwd", "é€\x7f",
           "--", "-", "proxyless@32:zzz", "proxyless@32:066646660666066626662"]
NOT_A_NUMBER = ["abc", "nan", "1e999", "inf", "-inf", "1,5", "", "--x"]


def _commands() -> dict:
    """Every leaf command by its words (``"table validate"``); typer's own click, whichever it carries."""
    root = get_command(app)
    out = {}
    for name, cmd in root.commands.items():
        if hasattr(cmd, "commands"):
            out.update({f"{name} {sub}": c for sub, c in cmd.commands.items()})
        else:
            out[name] = cmd
    return out


COMMANDS = _commands()


def _options(cmd) -> list:
    return [p for p in cmd.params if p.param_type_name == "option" and "--help" not in p.opts]


def _numeric(cmd) -> list:
    """The options whose value is a number (from the annotations of the command's function)."""
    types = {k: str(v.annotation) for k, v in inspect.signature(cmd.callback).parameters.items()}
    return [p for p in _options(cmd) if not p.is_flag and types.get(p.name) in ("int", "float")]


@st.composite
def argv(draw, name: str) -> list[str]:
    cmd = COMMANDS[name]
    args: list[str] = name.split()
    for p in cmd.params:  # positional arguments, present or not
        if p.param_type_name == "argument" and draw(st.booleans()):
            args += [draw(st.sampled_from(HOSTILE)) for _ in range(1 if p.nargs == 1 else draw(st.integers(1, 2)))]
    for p in draw(st.lists(st.sampled_from(_options(cmd)), max_size=5)):
        args.append(draw(st.sampled_from(p.opts + p.secondary_opts)))
        if not p.is_flag:
            args.append(draw(st.sampled_from(HOSTILE)))
    numeric = _numeric(cmd)
    # the one value that must stop the command before it starts any real work
    if numeric and draw(st.booleans()):
        bad = [draw(st.sampled_from(numeric)).opts[0], draw(st.sampled_from(NOT_A_NUMBER))]
    else:
        bad = [draw(st.sampled_from(["--bogus", "--no-such-flag", "--Device"]))]
    at = draw(st.integers(len(name.split()), len(args)))
    return args[:at] + bad + args[at:]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_argument_list_gives_a_traceback(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    @settings(max_examples=20, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(argv(name))
    def run(args: list[str]) -> None:
        code, said = invoke(capsys, args)
        assert not _TRACEBACK.search(said), f"{args}: {said}"
        assert code in (0, 1, 2), f"{args}: exit {code}: {said}"
        if code == 2:
            assert "--help" in said or "fix:" in said, f"{args}: {said}"

    run()
