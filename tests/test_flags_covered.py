"""Every flag of every script is exercised by some test (a flag nobody runs is a flag that breaks unseen)."""

import re

import pytest

from helpers import REPO_ROOT

SCRIPTS = sorted((REPO_ROOT / "scripts").glob("*.py"))
CLI_SOURCE = (REPO_ROOT / "hf_mim_cli" / "arguments.py").read_text()
FLAG = r'add_argument\(\s*"(--[a-z0-9_]+)"'


def shared_flags(function: str) -> list[str]:
    body = CLI_SOURCE.split(f"def {function}(")[1].split("\ndef ")[0]
    return re.findall(FLAG, body)


TEST_SOURCES = "\n".join(p.read_text() for p in (REPO_ROOT / "tests").glob("test_*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_every_flag_appears_in_a_test_invocation(script):
    source = script.read_text()
    flags = re.findall(FLAG, source)
    for function in ("add_data_arguments", "add_loop_arguments"):
        if f"{function}(" in source:
            flags += shared_flags(function)
    assert flags, f"{script.name} defines no flags?"
    unexercised = [flag for flag in flags if f'"{flag}"' not in TEST_SOURCES]
    assert not unexercised, f"{script.name}: no test passes {unexercised}"
