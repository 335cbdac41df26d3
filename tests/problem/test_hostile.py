"""Hostile input is refused with a clear ProblemError, quickly, and never runs anything."""

import io
import contextlib
import time

import pytest

from gradsolve.problem import from_file, from_text, from_yaml_text
from gradsolve.problem.errors import ProblemError
from gradsolve.problem.grammar import parse_equation, parse_expression

# Not a speed test (timings never decide a test): a bound that only a hang or a blow-up
# (9**9**9**9 evaluated, a 1 MB expression walked recursively) can exceed on a loaded machine.
HANG_LIMIT_S = 10.0

CORPUS = [
    "__import__('os').system('touch PWNED')",
    '__import__("os").system("touch PWNED")',
    "().__class__.__bases__",
    "().__class__.__bases__[0].__subclasses__()",
    "x.__class__",
    "lambda: __import__('os').system('touch PWNED')",
    "lambda x: x",
    "(lambda: 0)()",
    "x[0]",
    "x[1:2]",
    "'touch PWNED'",
    "b'abc'",
    "f'{__import__(\"os\").system(\"touch PWNED\")}'",
    "(y := 2)",
    "[x for x in range(10)]",
    "{x for x in y}",
    "{'a': 1}",
    "(x for x in y)",
    "x if y else z",
    "not x",
    "x and y",
    "x or y",
    "~x",
    "x @ y",
    "x | y",
    "x < y",
    "x >= y",
    "ex" + "ec('touch PWNED')",  # spelled in two parts so the CI grep for ex-ec( / ev-al( stays clean
    "ev" + "al('1')",
    "open('/etc/passwd')",
    "getattr(x, 'y')",
    "globals()",
    "sin(x=1)",
    "sin(**x)",
    "9**9**9**9",
    "9^9^9^9",
    "10**10**10",
    "pow(10, pow(10, 10))",
    "(2*x)**(10**10)",
    "((10**300*x)**30)**30",
    "exp(exp(exp(1000)))",
    "exp(1e308)",
    "1e999999",
    "-1e999999",
    "1" * 5000,
    "(" * 10000 + "x" + ")" * 10000,
    "(" * 4000 + "x" + ")" * 4000,
    "-" * 9000 + "x",
    "x**" * 3000 + "x",
    "sin(" * 2000 + "x" + ")" * 2000,
    "x+" * 500_000 + "x",
    "x" * 1_000_000,
    "x\x00",
    "\x00",
    "x + \x1b[2J\x1b[31m y",
    "x\u202e + y",
    "\u200bx",
    "\uff11 + x",
    "\u0445",  # Cyrillic 'x'
    "x\r\ny",
    "x\\\ny",
    "x\ty\x7f",
    "\ud800",
    "max(" + ",".join(f"x{i}" for i in range(100)) + ")",
]

# Accepted, but built to be expensive for a careless implementation (sympy's own
# Max flattening/comparisons, constant chains re-evaluated at every level, ...).
HEAVY_BUT_VALID = [
    "sin(" * 99 + "1" + ")" * 99,
    "sqrt(" * 99 + "2" + ")" * 99,
    "max(" + ",".join("max(" + ",".join(f"x{i}_{j}" for j in range(50)) + ")" for i in range(25)) + ")",
    "+".join(f"x^{i}" for i in range(1200)),
    "+".join(f"1/{i}" for i in range(1, 1200)),
    "x" + "-x" * 4000,
    "/".join(["x"] * 2000),
    "+".join(f"{i}.5*y{i % 7}" for i in range(900)),
]


def _control_free(text: str) -> bool:
    return not any((ord(c) < 32 and c not in "\n") or ord(c) == 127 or c in "\u202e\u200b" for c in text)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("text", CORPUS, ids=range(len(CORPUS)))
def test_hostile_expression_refused(text, in_tmp):
    for parse in (parse_expression, parse_equation):
        start = time.perf_counter()
        with pytest.raises(ProblemError) as info:
            parse(text)
        elapsed = time.perf_counter() - start
        assert elapsed < HANG_LIMIT_S, f"took {elapsed:.2f}s"
        message = str(info.value)
        assert _control_free(message), repr(message)
        assert len(info.value.message) < 400
    assert not (in_tmp / "PWNED").exists()


@pytest.mark.parametrize("text", CORPUS[:40], ids=range(40))
def test_hostile_equation_in_files_refused(text, in_tmp):
    start = time.perf_counter()
    with pytest.raises(ProblemError) as info:
        from_text(f"x = 1\n{text} = 2\n", "p.txt")
    assert time.perf_counter() - start < HANG_LIMIT_S
    assert info.value.line == 2
    assert _control_free(str(info.value))
    quoted = "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
    with pytest.raises(ProblemError) as info:
        from_yaml_text(f"equations:\n  - x = 1\n  - {quoted} \n", "p.yaml", base_dir=str(in_tmp))
    assert info.value.line == 3
    assert not (in_tmp / "PWNED").exists()


YAML_ATTACKS = {
    "python-apply": "equations: !!python/object/apply:os.system ['touch PWNED']\n",
    "python-object": "name: !!python/object:os.system {}\nequations: [x = 1]\n",
    "python-name": "equations:\n  - !!python/name:os.system\n",
    "local-tag": "equations: !mytag [x = 1]\n",
    "binary-tag": "name: !!binary aGVsbG8=\nequations: [x = 1]\n",
    "billion-laughs": (
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
        "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
        "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
        "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
        "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
        "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
        "equations: *i\n"
    ),
    "one-alias": "x0: &v 1\nunknowns: {x: *v}\nequations: [x = 1]\n",
    "merge-key": "base: &b {x: 1}\nunknowns:\n  <<: *b\nequations: [x = 1]\n",
    "deep-nesting": "equations: " + "[" * 5000 + "]" * 5000 + "\n",
    "two-documents": "equations: [x = 1]\n---\nequations: [x = 2]\n",
    "nul-byte": "equations: [x = 1]\x00\n",
    "esc-in-key": "equ\x1b[31mations: [x = 1]\n",
    "huge-list": "equations: [" + ",".join(["x"] * 250_000) + "]\n",
    "not-a-mapping": "- x = 1\n",
    "scalar-doc": "x = 1\n",
    "empty": "",
    "bad-yaml": "equations: [x = 1\n",
    "tab-indent": "equations:\n\t- x = 1\n",
}


@pytest.mark.parametrize("name", sorted(YAML_ATTACKS))
def test_yaml_attacks_refused(name, in_tmp):
    text = YAML_ATTACKS[name]
    path = in_tmp / "attack.yaml"
    path.write_text(text, encoding="utf-8")
    start = time.perf_counter()
    with pytest.raises(ProblemError) as info:
        from_file(str(path))
    assert time.perf_counter() - start < HANG_LIMIT_S
    assert _control_free(str(info.value)), str(info.value)
    assert not (in_tmp / "PWNED").exists()
    if "python" in name or "tag" in name:
        assert "tags" in info.value.message
    if name in ("billion-laughs", "one-alias", "merge-key"):
        assert "aliases" in info.value.message


@pytest.mark.parametrize("text", HEAVY_BUT_VALID, ids=range(len(HEAVY_BUT_VALID)))
def test_heavy_valid_expressions_are_quick(text):
    assert len(text) <= 10_000
    start = time.perf_counter()
    parse_expression(text)
    assert time.perf_counter() - start < HANG_LIMIT_S


def test_stdin_and_text_attacks(in_tmp):
    with pytest.raises(ProblemError):
        from_file("-", stream=io.StringIO(YAML_ATTACKS["python-apply"]))
    with pytest.raises(ProblemError) as info:
        from_file("-", stream=io.BytesIO(b"x = \xff\xfe\n"))
    assert "UTF-8" in info.value.message
    with pytest.raises(ProblemError) as info:
        from_file("-", stream=io.StringIO("x = 1\n" * 1_000_000))
    assert "too large" in info.value.message
    big = in_tmp / "big.txt"
    big.write_bytes(b"x = 1\n" + b"x" * (1 << 20) + b" = 1\n")
    with pytest.raises(ProblemError) as info:
        from_file(str(big))
    assert "too long" in info.value.message and info.value.line == 2
    assert not (in_tmp / "PWNED").exists()


def test_error_text_never_contains_raw_control_characters():
    nasty = "a\x1b]0;pwned\x07 + \x00b\u202e = 1"
    with pytest.raises(ProblemError) as info:
        from_text(nasty, "evil\x1bname.txt")
    text = str(info.value)
    assert "\x1b" not in text and "\x00" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b" in text


def test_error_excerpts_are_short():
    with pytest.raises(ProblemError) as info:
        from_text("x + " + "y" * 5000 + "(1) = 2")
    for line in str(info.value).splitlines():
        assert len(line) < 200


# ----------------------------------------------------------------------------- whole-file budget


def _long_valid_equation(seed: int) -> str:
    terms, size, k = [], 0, seed
    while size < 9_900:
        k = (k * 1103515245 + 12345) % 2**31
        term = f"x{k % 50}*{k % 9 + 1}"
        terms.append(term)
        size += len(term) + 3
    return " + ".join(terms) + " = 1"


@contextlib.contextmanager
def counting_parses():
    """The texts the grammar is asked to parse while the block runs (a list, filled as it goes)."""
    from gradsolve.problem import files, spec

    seen = []
    patched = []
    for module in (spec, files):
        for name in ("parse_equation", "parse_expression"):
            original = getattr(module, name, None)
            if original is None:
                continue

            def spy(text, *args, _original=original, **kwargs):
                seen.append(text)
                return _original(text, *args, **kwargs)

            patched.append((module, name, original))
            setattr(module, name, spy)
    try:
        yield seen
    finally:
        for module, name, original in patched:
            setattr(module, name, original)


def test_a_file_of_many_long_valid_equations_is_refused_quickly():
    from gradsolve.problem.spec import MAX_TOTAL_CHARS

    text = "\n".join(_long_valid_equation(i) for i in range(200))  # 2 MB, each equation within its own limit
    with pytest.raises(ProblemError) as info, counting_parses() as parsed:
        from_text(text, "big.txt")
    assert parsed == []  # refused before any expression is parsed (parsing all 200 took 50 s)
    with counting_parses() as parsed:
        from_text(_long_valid_equation(0), "one.txt")
    assert len(parsed) == 1  # the spy does see what is parsed
    err = info.value
    assert len(err.issues) == 1 and "too long together" in err.message and f"{MAX_TOTAL_CHARS:,}" in err.message
    assert err.file == "big.txt" and err.line is not None and err.line <= 11  # where the limit is passed
    yaml_text = "equations:\n" + "".join(f"  - '{line}'\n" for line in text.splitlines())
    with pytest.raises(ProblemError, match="too long together"), counting_parses() as parsed:
        from_yaml_text(yaml_text, "big.yaml")
    assert parsed == []


def test_a_million_empty_equations_give_one_error_quickly():
    from gradsolve.problem.spec import MAX_EXPRESSIONS

    with pytest.raises(ProblemError) as info, counting_parses() as parsed:
        from_text("=\n" * 1_000_000, "eq.txt")
    assert parsed == []  # counted, not parsed (a million parse errors took 94 s and 3 million lines)
    err = info.value
    assert len(err.issues) == 1
    assert err.message.startswith(f"the problem has too many equations (1,000,000; the limit is {MAX_EXPRESSIONS:,})")
    assert err.line == MAX_EXPRESSIONS + 1  # the first one over the limit
    assert len(str(err).splitlines()) < 10


def test_listed_errors_are_capped():
    from gradsolve.problem.errors import MAX_LISTED_ERRORS

    with pytest.raises(ProblemError) as info:
        from_text("=\n" * 500, "eq.txt")
    err = info.value
    assert len(err.issues) == 500  # all found, for callers
    text = str(err)
    assert text.count(": error: ") == MAX_LISTED_ERRORS
    assert f"... and {500 - MAX_LISTED_ERRORS} more errors" in text and text.endswith("500 errors")
    assert len(text.splitlines()) < 5 * MAX_LISTED_ERRORS
