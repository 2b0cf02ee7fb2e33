"""Every flag of every script is exercised by some test (a flag nobody runs is a flag that breaks unseen)."""

import re

import pytest

from helpers import REPO_ROOT

SCRIPTS = sorted((REPO_ROOT / "scripts").glob("*.py"))
TEST_SOURCES = "\n".join(p.read_text() for p in (REPO_ROOT / "tests").glob("test_*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_every_flag_appears_in_a_test_invocation(script):
    flags = re.findall(r'add_argument\(\s*"(--[a-z0-9_]+)"', script.read_text())
    assert flags, f"{script.name} defines no flags?"
    unexercised = [flag for flag in flags if f'"{flag}"' not in TEST_SOURCES]
    assert not unexercised, f"{script.name}: no test passes {unexercised}"
