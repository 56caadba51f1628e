"""The agent's own glob matcher agrees with fnmatch on its whole syntax."""

from __future__ import annotations

import fnmatch
import random
import re
import warnings

import pytest

from memtop.agent.globmatch import GlobError, compile_glob

EDGES = [
    ("*", ["", "a", "a/b\nc"]),
    ("*/app/*.py", ["/srv/app/x.py", "/srv/app/x.pyc", "app/x.py"]),
    ("[]]", ["]", "a"]),
    ("[!]]", ["]", "a"]),
    ("[a-c-e]", ["b", "-", "d", "e"]),
    ("[z-a]", ["a", "z", "-"]),
    ("[!z-a]", ["a", "z"]),
    ("[", ["[", "a"]),
    ("[!", ["[!", "a"]),
    ("a[", ["a["]),
    ("[^a]", ["^", "a", "b"]),
    ("[\\]", ["\\", "a"]),
    ("[a&&b]", ["&", "a", "c"]),
    ("?*?", ["a", "ab", "abc"]),
    ("*a*a*a*a*a*b", ["a" * 40, "a" * 40 + "b"]),
    ("*[0-9]?.py", ["mod1x.py", "mod12.py", "x.py"]),
]


@pytest.mark.parametrize(("pattern", "names"), EDGES)
def test_edge_cases_match_as_fnmatch(pattern: str, names: list[str]) -> None:
    glob = compile_glob(pattern)
    for name in names:
        assert glob.match(name) == fnmatch.fnmatchcase(name, pattern), (pattern, name)


def test_random_patterns_match_as_fnmatch() -> None:
    rng = random.Random(8)
    checked = matched = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fnmatch warns about "possible nested sets"
        for _ in range(20000):
            pattern = "".join(rng.choice("ab-!]^[*?\\&z") for _ in range(rng.randint(0, 10)))
            try:
                expected = fnmatch._compile_pattern(pattern)  # type: ignore[attr-defined]
            except (re.error, IndexError):
                with pytest.raises(GlobError):
                    compile_glob(pattern)
                continue
            glob = compile_glob(pattern)
            for _ in range(6):
                name = "".join(
                    char if rng.random() < 0.6 else rng.choice("ab-!]^[\\&zq")
                    for char in pattern.replace("*", rng.choice(["", "a", "zz"])).replace("?", "q")
                )
                found = bool(expected(name))
                assert glob.match(name) == found, (pattern, name)
                checked += 1
                matched += found
    assert matched > checked // 10  # the names exercise matches, not only misses


def test_the_filter_prompt_refuses_what_the_agent_would_refuse() -> None:
    from memtop.agent import checks
    from memtop.ui.view_state import BadFilter, parse_filter

    longest = "x" * (checks.MAX_PATTERN_CHARS - 2)  # sent as *x…x*
    assert len(parse_filter(longest)[0]) == checks.MAX_PATTERN_CHARS
    with pytest.raises(BadFilter, match="longer than"):
        parse_filter(longest + "x")
    with pytest.raises(BadFilter, match="at most"):
        parse_filter(" ".join(["a"] * (checks.MAX_PATTERNS + 1)))
