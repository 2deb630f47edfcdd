"""Unit tests of lsca.policy: rule semantics, path globs, validation errors with their
lines, shipping to workers. Pure Python: no supervisor, no process is started."""
import errno
import fnmatch
import json
import pickle
import textwrap

import pytest
from hypothesis import given, settings, strategies as st

from lsca.opclasses import ALL, CLASSES, resolve
from lsca.policy import Decision, Policy, PolicyError, glob_regex, compile_globs

ALLOW = Decision("allow", 0, False, "default")


def policy(text):
    return Policy.from_text(textwrap.dedent(text))


def error(text):
    """The one-line message of the PolicyError a policy text raises."""
    with pytest.raises(PolicyError) as info:
        Policy.from_text(textwrap.dedent(text))
    message = str(info.value)
    assert "\n" not in message
    return message


# --- evaluation ----------------------------------------------------------------------------

def test_first_matching_rule_decides():
    p = policy("""
        [[rule]]
        name = "tmp ok"
        path = "/tmp/**"
        action = "allow"

        [[rule]]
        name = "no opens"
        op = "openat"
        action = "deny"
        errno = "EPERM"
    """)
    assert p.decide("openat", ["/tmp/x"], 0, "sh") == Decision("allow", 0, False, "tmp ok")
    assert p.decide("openat", ["/etc/x"], 0, "sh") == Decision("deny", errno.EPERM, False, "no opens")
    assert p.decide("read", [], 0, "sh") == ALLOW


def test_order_matters():
    allow = '[[rule]]\nop = "openat"\naction = "allow"\n'
    deny = '[[rule]]\nop = "openat"\naction = "deny"\n'
    assert Policy.from_text(allow + deny).decide("openat", ["/x"], 0, "sh").action == "allow"
    assert Policy.from_text(deny + allow).decide("openat", ["/x"], 0, "sh") == \
        Decision("deny", errno.EACCES, False, "rule 1")


def test_log_rule_marks_and_continues():
    p = policy("""
        [[rule]]
        name = "watch etc"
        path = "/etc/**"
        action = "log"

        [[rule]]
        path = "/etc/shadow"
        action = "deny"

        [[rule]]
        name = "late log"
        action = "log"
    """)
    # The log rule matched, the deny rule after it decides.
    assert p.decide("openat", ["/etc/shadow"], 0, "sh") == Decision("deny", errno.EACCES, True, "rule 2")
    # Log rules only: the default decides, with log set.
    assert p.decide("openat", ["/etc/passwd"], 0, "sh") == Decision("allow", 0, True, "default")
    assert p.decide("read", None, 0, "sh") == Decision("allow", 0, True, "default")


def test_log_rule_after_the_deciding_rule_is_not_reached():
    p = policy("""
        [[rule]]
        op = "close"
        action = "allow"

        [[rule]]
        action = "log"
    """)
    assert p.decide("close", None, 0, "sh") == Decision("allow", 0, False, "rule 1")


@pytest.mark.parametrize("value, code", [('"EPERM"', errno.EPERM), ("13", 13), ('"EWOULDBLOCK"', errno.EAGAIN),
                                         ("4095", 4095)])
def test_default_deny_with_default_errno(value, code):
    p = policy(f"""
        default = "deny"
        default_errno = {value}

        [[rule]]
        op = "read"
        action = "allow"
    """)
    assert p.decide("write", [], 0, "sh") == Decision("deny", code, False, "default")
    assert p.decide("read", [], 0, "sh") == Decision("allow", 0, False, "rule 1")


def test_defaults_without_keys():
    p = Policy.from_text("")
    assert p.rule_count == 0 and p.decide("openat", ["/x"], 0, "sh") == ALLOW
    p = Policy.from_text('default = "deny"')
    assert p.decide("openat", ["/x"], 0, "sh") == Decision("deny", errno.EACCES, False, "default")
    # default_errno is accepted with default allow (to switch the default back and forth).
    p = Policy.from_text('default = "allow"\ndefault_errno = "EPERM"')
    assert p.decide("openat", ["/x"], 0, "sh") == ALLOW


@pytest.mark.parametrize("glob, path, matches", [
    ("/etc/*", "/etc/passwd", True),
    ("/etc/*", "/etc/ssl/certs", False),  # '*' stays within one component
    ("/etc/*", "/etc", False),
    ("/etc/**", "/etc/passwd", True),
    ("/etc/**", "/etc/ssl/certs/ca.pem", True),
    ("/etc/**", "/etc", False),  # documented: a trailing '/**' is what is below, not the dir
    ("/etc/**", "/etcetera/x", False),
    ("/a/**/b", "/a/b", True),  # '**' in the middle: zero components too
    ("/a/**/b", "/a/x/y/b", True),
    ("/a/**/b", "/a/x/y/c", False),
    ("/**/passwd", "/passwd", True),
    ("/**/passwd", "/etc/passwd", True),
    ("/**", "/", False),
    ("/**", "/anything/at/all", True),
    ("/*", "/tmp", True),
    ("/*", "/", False),  # "/" has no component for '*' to match
    ("/", "/", True),
    ("/", "/tmp", False),
    ("/etc/", "/etc", True),  # a trailing slash is ignored
    ("//etc//passwd", "/etc/passwd", True),  # repeated slashes are one
    ("/home/*/.ssh/**", "/home/ann/.ssh/id_rsa", True),
    ("/home/*/.ssh/**", "/home/ann/x/.ssh/id_rsa", False),
    ("/tmp/*", "/tmp/.hidden", True),  # no special case for dot files
    ("/tmp/a**", "/tmp/abc", True),  # '**' inside a component is '*'
    ("/tmp/a**", "/tmp/a/b", False),
    ("/tmp/?", "/tmp/x", True),
    ("/tmp/?", "/tmp/xy", False),
    ("/a?b", "/a/b", False),  # '?' never matches '/'
    ("/tmp/[ab]", "/tmp/b", True),
    ("/tmp/[ab]", "/tmp/c", False),
    ("/tmp/[!ab]", "/tmp/c", True),
    ("/tmp/[!ab]", "/tmp/a", False),
    ("/a[!x]b", "/a/b", False),  # neither does a negated class
    ("/tmp/[a-c]x", "/tmp/bx", True),
    ("/tmp/[]]", "/tmp/]", True),  # ']' first in a class is a member
    ("/tmp/[-a]", "/tmp/-", True),
    ("/tmp/[x", "/tmp/[x", True),  # an unclosed '[' is literal
    ("/tmp/a.b", "/tmp/axb", False),  # regex characters are literal
    ("/tmp/a+(b)|c", "/tmp/a+(b)|c", True),
    ("/tmp/a\\b", "/tmp/a\\b", True),  # no escape character
])
def test_path_globs(glob, path, matches):
    assert bool(compile_globs([glob]).fullmatch(path)) is matches
    p = Policy.from_text(f'[[rule]]\npath = {json.dumps(glob)}\naction = "deny"\n')
    assert p.decide("openat", [path], 0, "sh").action == ("deny" if matches else "allow")


def test_paths_list_matches_any():
    p = policy("""
        [[rule]]
        paths = ["/etc", "/etc/**", "/root/**"]
        action = "deny"
    """)
    for path in ("/etc", "/etc/passwd", "/root/.bashrc"):
        assert p.decide("openat", [path], 0, "sh").action == "deny"
    assert p.decide("openat", ["/home/x"], 0, "sh").action == "allow"


def test_two_path_calls_match_on_either_path():
    p = policy("""
        [[rule]]
        ops = ["rename", "link"]
        path = "/etc/**"
        action = "deny"
        errno = "EPERM"
    """)
    denied = Decision("deny", errno.EPERM, False, "rule 1")
    assert p.decide("renameat2", ["/etc/passwd", "/tmp/stolen"], 0, "mv") == denied
    assert p.decide("renameat2", ("/tmp/evil", "/etc/passwd"), 0, "mv") == denied
    assert p.decide("linkat", ["/tmp/a", "/etc/a"], 0, "ln") == denied
    assert p.decide("renameat2", ["/tmp/a", "/tmp/b"], 0, "mv") == ALLOW


def test_path_rule_never_matches_a_call_without_path():
    p = policy("""
        [[rule]]
        path = "/**"
        action = "deny"

        [[rule]]
        name = "pathless"
        op = "write"
        action = "deny"
    """)
    assert p.decide("read", None, 0, "sh") == ALLOW
    assert p.decide("read", [], 0, "sh") == ALLOW
    assert p.decide("read", (), 0, "sh") == ALLOW
    # A rule without a path matches calls with and without one.
    assert p.decide("write", None, 0, "sh").rule == "pathless"
    assert p.decide("openat", ["/x"], 0, "sh").rule == "rule 1"


def test_one_bare_path_and_bytes_paths():
    p = policy('[[rule]]\npath = "/etc/*"\naction = "deny"\n')
    assert p.decide("openat", "/etc/passwd", 0, "sh").action == "deny"
    assert p.decide("openat", [b"/etc/passwd"], 0, "sh").action == "deny"
    assert p.decide("openat", "/tmp/e", 0, "sh").action == "allow"


def test_uid_single_and_list():
    p = policy("""
        [[rule]]
        name = "one"
        uid = 1000
        action = "deny"

        [[rule]]
        name = "list"
        uid = [0, 1001]
        action = "log"
    """)
    assert p.decide("read", [], 1000, "sh").rule == "one"
    assert p.decide("read", [], 1001, "sh") == Decision("allow", 0, True, "default")
    assert p.decide("read", [], 0, "sh") == Decision("allow", 0, True, "default")
    assert p.decide("read", [], 1002, "sh") == ALLOW


def test_program_glob():
    p = policy("""
        [[rule]]
        program = "python3*"
        action = "deny"

        [[rule]]
        program = "[bd]ash"
        action = "deny"
        errno = 1
    """)
    assert p.decide("read", [], 0, "python3").action == "deny"
    assert p.decide("read", [], 0, "python3.11").action == "deny"
    assert p.decide("read", [], 0, "Python3") == ALLOW  # case-sensitive
    assert p.decide("read", [], 0, "python") == ALLOW
    assert p.decide("read", [], 0, "dash") == Decision("deny", 1, False, "rule 2")
    assert p.decide("read", [], 0, "rbash") == ALLOW
    assert p.decide("read", [], 0, None) == ALLOW


def test_all_conditions_must_hold():
    p = policy("""
        [[rule]]
        op = "unlink"
        path = "/srv/**"
        uid = 33
        program = "php*"
        action = "deny"
    """)
    assert p.decide("unlinkat", ["/srv/a"], 33, "php-fpm").action == "deny"
    assert p.decide("unlinkat", ["/srv/a"], 34, "php-fpm") == ALLOW
    assert p.decide("unlinkat", ["/srv/a"], 33, "perl") == ALLOW
    assert p.decide("unlinkat", ["/var/a"], 33, "php-fpm") == ALLOW
    assert p.decide("openat", ["/srv/a"], 33, "php-fpm") == ALLOW


def test_aliases_and_classes():
    p = policy("""
        [[rule]]
        name = "stat"
        op = "stat"
        action = "deny"

        [[rule]]
        name = "net"
        ops = ["%network"]
        action = "deny"

        [[rule]]
        name = "strace names"
        ops = ["pread64", "newfstatat", "creat"]
        action = "log"
    """)
    assert p.decide("fstatat", ["/x"], 0, "sh").rule == "stat"
    for op in CLASSES["network"]:
        assert p.decide(op, [], 0, "sh").rule == "net"
    assert p.decide("openat", ["/x"], 0, "sh") == Decision("allow", 0, True, "default")
    assert p.decide("pread", [], 0, "sh") == Decision("allow", 0, True, "default")
    assert p.decide("read", [], 0, "sh") == ALLOW


@pytest.mark.parametrize("ops", ['"all"', '"*"', '["%all"]', None])
def test_all_ops(ops):
    p = Policy.from_text("[[rule]]\n" + (f"ops = {ops}\n" if ops else "") + 'action = "deny"\n')
    assert all(p.decide(op, [], 0, "sh").action == "deny" for op in ALL)
    assert p.decide("not_an_op", [], 0, "sh").action == "deny"  # rules on every op apply to any name


def test_unknown_op_name_is_only_matched_by_rules_on_every_op():
    p = policy('[[rule]]\nop = "read"\naction = "deny"\n')
    assert p.decide("not_an_op", [], 0, "sh") == ALLOW


# --- validation: every error with its line -------------------------------------------------

RULE_ERRORS = [
    # (policy text, line of the error, a part of the message)
    ('default = "allow"\nfoo = 1\n', 2, "unknown key 'foo'"),
    ('# comment\n\ndefault = "log"\n', 3, "default must be 'allow' or 'deny'"),
    ('default = "deny"\ndefault_errno = "ENOSUCH"\n', 2, "unknown errno name"),
    ('default = "deny"\ndefault_errno = 0\n', 2, "1..4095"),
    ('default_errno = 4096\n', 1, "1..4095"),
    ('[[rule]]\naction = "deny"\n\n[[rule]]\naction = "allow"\nopz = ["openat"]\n', 6, "unknown rule key 'opz'"),
    ('[[rule]]\nop = "read"\n  action = "block"\n', 3, "bad action 'block'"),
    ('[[rule]]\naction = "deny"\n[[rule]]\nop = "read"\n', 3, "missing action"),
    ('[[rule]]\naction = "deny"\nops = ["openat", "bogus"]\n', 3,
     "ops: unknown call or class 'bogus' (classes: %file, %desc, %network; calls: "),
    ('[[rule]]\naction = "deny"\nop = "%files"\n', 3, "unknown call or class '%files'"),
    ('[[rule]]\naction = "deny"\nops = []\n', 3, "non-empty list of strings"),
    ('[[rule]]\naction = "deny"\nops = [1]\n', 3, "non-empty list of strings"),
    ('[[rule]]\naction = "deny"\nerrno = "EPREM"\n', 3, "unknown errno name"),
    ('[[rule]]\naction = "deny"\nerrno = 0\n', 3, "1..4095"),
    ('[[rule]]\naction = "deny"\nerrno = 4096\n', 3, "1..4095"),
    ('[[rule]]\naction = "deny"\nerrno = true\n', 3, "errno name or number"),
    ('[[rule]]\naction = "deny"\nerrno = "eperm"\n', 3, "unknown errno name"),
    ('[[rule]]\naction = "allow"\nerrno = "EPERM"\n', 3, "errno is for deny rules only"),
    ('[[rule]]\naction = "log"\nerrno = 1\n', 3, "errno is for deny rules only"),
    ('[[rule]]\naction = "deny"\nuid = "root"\n', 3, "uid must be"),
    ('[[rule]]\naction = "deny"\nuid = [0, "1"]\n', 3, "uid must be"),
    ('[[rule]]\naction = "deny"\nuid = true\n', 3, "uid must be"),
    ('[[rule]]\naction = "deny"\nuid = []\n', 3, "uid must be"),
    ('[[rule]]\naction = "deny"\nuid = -1\n', 3, "uid must be"),
    ('[[rule]]\naction = "deny"\nuid = 1.5\n', 3, "uid must be"),
    ('[[rule]]\naction = "deny"\npath = ""\n', 3, "path: empty glob"),
    ('[[rule]]\naction = "deny"\npaths = ["/etc/**", ""]\n', 3, "paths: empty glob"),
    ('[[rule]]\naction = "deny"\nprogram = ""\n', 3, "program: empty glob"),
    ('[[rule]]\naction = "deny"\npath = "etc/**"\n', 3, "not absolute (must start with '/')"),
    ('[[rule]]\naction = "deny"\npath = "*.conf"\n', 3, "not absolute"),
    ('[[rule]]\naction = "deny"\npath = "/tmp/[z-a]"\n', 3, "bad glob '/tmp/[z-a]'"),
    ('[[rule]]\naction = "deny"\npath = 7\n', 3, "path must be a string"),
    ('[[rule]]\naction = "deny"\nprogram = ["sh"]\n', 3, "program must be a string"),
    ('[[rule]]\naction = "deny"\nprogram = "a-very-long-program"\n', 3, "can never match"),
    ('[[rule]]\nop = "read"\naction = "deny"\nops = ["write"]\n', 4, "either 'op' or 'ops'"),
    ('[[rule]]\naction = "deny"\npaths = ["/a"]\npath = "/b"\n', 3, "either 'path' or 'paths'"),
    ('[[rule]]\nname = 5\naction = "deny"\n', 2, "name must be a non-empty string"),
    ('[rule]\naction = "deny"\n', 1, "[[rule]]"),
    ('default = "deny"\nrule = 5\n', 2, "[[rule]]"),
    ('default = "deny"\nrule = [1]\n', 2, "rule 1 must be a table"),
    ('rule = [{action = "allow"},\n  {action = "nope"}]\n', 1, "bad action 'nope'"),
    # The key's line inside the right rule, not an earlier rule's same key.
    ('[[rule]]\nops = ["read"]\naction = "deny"\n\n[[rule]]  # second\n'
     '# the bad one\n  "ops" = [\n  "write",\n  "bogus",\n]\naction = "deny"\n', 7, "'bogus'"),
    # A sub-table of a rule ends the rule's key scan: the error falls back to the header.
    ('[[rule]]\naction = "deny"\n[rule.extra]\nx = 1\n', 1, "unknown rule key 'extra'"),
]


@pytest.mark.parametrize("text, line, part", RULE_ERRORS)
def test_validation_error_line(text, line, part):
    message = error(text)
    assert message.startswith(f"<policy>:{line}: "), message
    assert part in message


@pytest.mark.parametrize("text, line", [
    ('default = "allow"\n\n[[rule]]\naction = deny\n', 4),
    ('[[rule]]\naction = "deny"\naction = "allow"\n', 3),  # a duplicate key
    ('[[rule]\n', 1),
    ('[[rule]]\nops = ["read",\n', 2),  # at end of document: the last line
])
def test_syntax_error_line(text, line):
    message = error(text)
    assert message.startswith(f"<policy>:{line}: "), message
    assert "(at line" not in message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(PolicyError) as info:
        Policy.load(path)
    assert str(info.value) == f"{path}: cannot read: No such file or directory"
    with pytest.raises(PolicyError, match="cannot read: Is a directory"):
        Policy.load(tmp_path)


def test_load_file_errors_name_the_file(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[[rule]]\naction = "deny"\nop = "nope"\n')
    with pytest.raises(PolicyError) as info:
        Policy.load(str(path))
    assert str(info.value).startswith(f"{path}:3: op: unknown call or class 'nope'")
    assert (info.value.source, info.value.line) == (str(path), 3)
    path.write_bytes(b'default = "allow"\n# \xff\n')
    with pytest.raises(PolicyError, match=r"p\.toml:2: not valid UTF-8"):
        Policy.load(path)


def test_policy_error_is_a_value_error_and_pickles():
    e = error('[[rule]]\naction = "x"\n')
    with pytest.raises(ValueError):
        Policy.from_text('[[rule]]\naction = "x"\n')
    try:
        Policy.from_text('[[rule]]\naction = "x"\n')
    except PolicyError as caught:
        again = pickle.loads(pickle.dumps(caught))
        assert str(again) == e and again.line == 2


# --- shipping, summaries -------------------------------------------------------------------

SAMPLE = """
default = "deny"
default_errno = "EPERM"

[[rule]]
name = "log etc"
path = "/etc/**"
action = "log"

[[rule]]
name = "tmp"
ops = ["%file"]
paths = ["/tmp", "/tmp/**"]
action = "allow"

[[rule]]
op = "read"
uid = [0, 1000]
program = "cat"
action = "allow"
"""

CALLS = [("openat", ["/tmp/x"], 0, "sh"), ("openat", ["/etc/x"], 0, "sh"), ("read", [], 1000, "cat"),
         ("read", [], 1, "cat"), ("renameat2", ["/tmp/a", "/etc/b"], 0, "mv"), ("write", None, 0, "sh")]


def test_json_round_trip(tmp_path):
    path = tmp_path / "sample.toml"
    path.write_text(SAMPLE)
    original = Policy.load(path)
    shipped = original.to_json()
    json.loads(shipped)  # plain JSON
    copy = Policy.from_json(shipped)
    assert copy.source == str(path) and copy.rule_count == 3
    assert copy.describe() == original.describe()
    assert [copy.decide(*c) for c in CALLS] == [original.decide(*c) for c in CALLS]
    assert copy.decide("openat", ["/etc/x"], 0, "sh") == Decision("deny", errno.EPERM, True, "default")
    assert copy.decide("renameat2", ["/tmp/a", "/etc/b"], 0, "mv") == Decision("allow", 0, True, "tmp")
    with pytest.raises(PolicyError):
        Policy.from_json("{not json")
    with pytest.raises(PolicyError):
        Policy.from_json('{"text": "x"}')


def test_describe():
    assert Policy.from_text(SAMPLE, "p.toml").describe() == "policy p.toml: 3 rules, default deny (EPERM)"
    assert Policy.from_text('[[rule]]\naction="log"').describe() == "policy <policy>: 1 rule, default allow"
    assert Policy.from_text("").describe() == "policy <policy>: 0 rules, default allow"


def test_ops_with_rules():
    assert Policy.from_text("").ops_with_rules() == set()
    assert policy("""
        [[rule]]
        op = "openat"
        action = "allow"
    """).ops_with_rules() == set()  # an allow rule under default allow changes nothing
    assert policy("""
        [[rule]]
        ops = ["%network"]
        path = "/x"
        action = "deny"

        [[rule]]
        op = "stat"
        action = "log"

        [[rule]]
        op = "read"
        action = "allow"
    """).ops_with_rules() == CLASSES["network"] | {"fstatat"}
    assert policy('[[rule]]\nuid = 5\naction = "deny"\n').ops_with_rules() == ALL
    assert policy('default = "deny"\n[[rule]]\nop = "read"\naction = "allow"\n').ops_with_rules() == ALL


def test_readme_example():
    p = policy("""
        default = "allow"
        default_errno = "EACCES"

        [[rule]]
        name = "no writes under /etc"
        ops = ["openat", "%file"]
        path = "/etc/**"
        uid = 1000
        program = "python3*"
        action = "deny"
        errno = "EPERM"
    """)
    assert p.decide("unlinkat", ["/etc/hosts"], 1000, "python3") == \
        Decision("deny", errno.EPERM, False, "no writes under /etc")
    assert p.decide("read", ["/etc/hosts"], 1000, "python3") == ALLOW


# --- properties ----------------------------------------------------------------------------

COMPONENT_CHARS = "ab.-"
path_components = st.text(COMPONENT_CHARS, min_size=1, max_size=3)
paths = st.lists(path_components, max_size=5).map(lambda parts: "/" + "/".join(parts))
glob_components = st.one_of(path_components, st.sampled_from(
    ["*", "**", "?", "a*", "*b", "a**", "[ab]", "[!a]", "[a-b]", ".*", "*?*"]))
globs = st.lists(glob_components, max_size=5).map(lambda parts: "/" + "/".join(parts))


def reference_match(glob_parts, path_parts):
    """Glob matching written another way: recursion over components, fnmatch within one."""
    if not glob_parts:
        return not path_parts
    head, rest = glob_parts[0], glob_parts[1:]
    if head == "**":
        # Zero or more components, at least one when '**' is last.
        first = 1 if not rest else 0
        return any(reference_match(rest, path_parts[k:]) for k in range(first, len(path_parts) + 1))
    return bool(path_parts) and fnmatch.fnmatchcase(path_parts[0], head) \
        and reference_match(rest, path_parts[1:])


def split(path):
    return [p for p in path.split("/") if p]


@settings(max_examples=250, deadline=None)
@given(globs, paths)
def test_glob_matches_reference(glob, path):
    expected = reference_match(split(glob), split(path))
    assert bool(compile_globs([glob]).fullmatch(path)) is expected, (glob, path, glob_regex(glob))


conditions = st.fixed_dictionaries({}, optional={
    "ops": st.lists(st.sampled_from(sorted(ALL) + ["%file", "%desc", "%network", "stat"]), min_size=1,
                    max_size=3),
    "path": globs,
    "uid": st.lists(st.integers(0, 3), min_size=1, max_size=3),
    "program": st.sampled_from(["sh", "py*", "?at", "[bc]at"]),
})
rules = st.tuples(conditions, st.sampled_from(["allow", "deny", "log"]), st.integers(1, 200))


def rule_text(rule):
    keys, action, code = rule
    text = "[[rule]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    return text + f'action = "{action}"\n' + (f"errno = {code}\n" if action == "deny" else "")


def reference_decide(rules, default, op, call_paths, uid, program):
    """decide() written the slow, obvious way, from the rule dictionaries."""
    log = False
    for index, (keys, action, code) in enumerate(rules):
        if "ops" in keys and op not in set().union(*map(resolve, keys["ops"])):
            continue
        if "path" in keys and not any(reference_match(split(keys["path"]), split(p)) for p in call_paths or []):
            continue
        if "uid" in keys and uid not in keys["uid"]:
            continue
        if "program" in keys and not fnmatch.fnmatchcase(program, keys["program"]):
            continue
        if action == "log":
            log = True
        else:
            return Decision(action, code if action == "deny" else 0, log, f"rule {index + 1}")
    return Decision(default, errno.EPERM if default == "deny" else 0, log, "default")


calls = st.tuples(st.sampled_from(sorted(ALL)), st.one_of(st.none(), st.lists(paths, max_size=2)),
                  st.integers(0, 3), st.sampled_from(["sh", "python3", "cat", "bat"]))


@settings(max_examples=150, deadline=None)
@given(st.lists(rules, max_size=5), st.sampled_from(["allow", "deny"]), st.lists(calls, min_size=1, max_size=5))
def test_decide_matches_reference(rules, default, sample):
    text = f'default = "{default}"\ndefault_errno = "EPERM"\n' + "".join(map(rule_text, rules))
    p = Policy.from_text(text)
    for call in sample:
        assert p.decide(*call) == reference_decide(rules, default, *call), (text, call)
    # Ops outside ops_with_rules() are always plainly allowed: the worker's fast path is safe.
    for op, call_paths, uid, program in sample:
        if op not in p.ops_with_rules():
            assert p.decide(op, call_paths, uid, program).action == "allow"


@settings(max_examples=80, deadline=None)
@given(st.lists(conditions.map(lambda keys: (keys, "allow", 0)), max_size=4),
       st.lists(calls, min_size=1, max_size=5))
def test_allow_only_policy_allows_everything(rules, sample):
    p = Policy.from_text("".join(map(rule_text, rules)))
    assert p.ops_with_rules() == set()
    for op, call_paths, uid, program in sample:
        decision = p.decide(op, call_paths, uid, program)
        assert (decision.action, decision.errno, decision.log) == ("allow", 0, False)
    # And what loaded ships: from_json never fails for it and decides the same.
    copy = Policy.from_json(p.to_json())
    assert [copy.decide(*c) for c in sample] == [p.decide(*c) for c in sample]
