"""Policies: which proxied calls LSCA lets through, which it refuses, which it logs.

A policy is a TOML file:

```toml
default = "allow"            # "allow" or "deny": what happens when no rule decides (default "allow")
default_errno = "EACCES"     # errno of a default deny: a name or a number 1..4095 (default EACCES)

[[rule]]
name = "no writes under /etc"    # optional, shown in logs and traces ("rule N" when missing)
ops = ["openat", "%file"]        # ops, aliases (stat, open, unlink...), classes (%file %desc
                                 # %network), "all" or "*"; missing = every op
path = "/etc/**"                 # glob on the resolved absolute path; missing = any path or none
uid = 1000                       # the calling thread's real uid: an int or a list of ints
program = "python3*"             # glob on the program name (the kernel's comm, at most 15 chars)
action = "deny"                  # "allow", "deny" or "log"
errno = "EPERM"                  # deny only: a name or a number 1..4095 (default EACCES)
```

Rules are tried in order and the first matching `allow` or `deny` rule decides; when none
does, `default` decides. A matching `log` rule decides nothing: the call is marked to be
logged and the following rules are tried. A rule matches a call when every condition it
has holds; a rule without a condition matches every call.

- `op` and `ops` are synonyms (give one of them), and so are `path` and `paths`; each takes
  a string or a list of strings (a list matches when any element does).
- A call with two paths (renameat2, linkat, symlinkat: old and new) matches a path rule
  when either path matches, so a deny on either name denies the call. A rule with a path
  never matches a call without a path (a call on a descriptor, for instance).
- Path globs must be absolute. `*` matches within one path component (`/*` does not match
  `/`), `?` one character other than `/`, `[...]` one character of a class (`[!...]`
  negates; never `/`). A component that is exactly `**` matches any number of components, none included:
  `/a/**/b` matches `/a/b` and `/a/x/y/b`. A trailing `/**` matches everything *below* a
  directory but not the directory itself: `/etc/**` matches `/etc/x` and `/etc/x/y`, not
  `/etc` (write `paths = ["/etc", "/etc/**"]` for both). `**` inside a component (`a**`)
  is a plain `*`. Repeated slashes are one slash and a trailing slash is ignored; dot
  files need no special pattern (`*` matches `.bashrc`). There is no escape character.
- `program` is a shell glob (`*` `?` `[...]`, case-sensitive) on the program name, which
  the kernel cuts to 15 characters: a literal name longer than that is refused.
- errno names are those of Python's errno module (`EPERM`, `ENOENT`, `EAGAIN`...).

A policy that cannot be used is refused whole, with one line `FILE:LINE: reason`.
"""
import errno as errno_module
import fnmatch
import json
import os
import re
import tomllib
from dataclasses import dataclass

from lsca.opclasses import ALL, resolve

ACTIONS = ("allow", "deny", "log")
TOP_KEYS = ("default", "default_errno", "rule")
RULE_KEYS = ("name", "op", "ops", "path", "paths", "uid", "program", "action", "errno")
COMM_MAX = 15  # the kernel keeps this many characters of a program name (TASK_COMM_LEN - 1)
MAX_ERRNO = 4095  # the kernel's error range: -4095..-1


class PolicyError(ValueError):
    """A policy that cannot be used; str() is one line, "FILE:LINE: reason" (or "FILE: reason")."""

    def __init__(self, source, line, reason):
        self.source, self.line, self.reason = source, line, reason
        where = f"{source}:{line}" if line else f"{source}"
        super().__init__(f"{where}: {reason}".replace("\n", " "))

    def __reduce__(self):
        # Rebuilt from its parts, so it survives pickling across processes.
        return (PolicyError, (self.source, self.line, self.reason))


@dataclass(frozen=True)
class Decision:
    action: str  # "allow" or "deny"
    errno: int  # 0 for allow
    log: bool  # a log rule matched on the way to the decision
    rule: str  # the deciding rule's name ("rule N" when unnamed), "default" when none decided


# --- globs ---------------------------------------------------------------------------------

def _translate_component(part):
    """Regex for one path component: like fnmatch, but nothing ever matches '/'."""
    out, i, n = [], 0, len(part)
    while i < n:
        c = part[i]
        i += 1
        if c == "*":
            while i < n and part[i] == "*":  # '**' inside a component is a plain '*'
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i
            if j < n and part[j] == "!":
                j += 1
            if j < n and part[j] == "]":  # a ']' first in a class is a member
                j += 1
            while j < n and part[j] != "]":
                j += 1
            if j >= n:  # no closing ']': a literal '[' (as fnmatch does)
                out.append(re.escape(c))
                continue
            body = part[i:j]
            i = j + 1
            negate = body.startswith("!")
            if negate:
                body = body[1:]
            # '-' keeps its range meaning, everything else is a literal member.
            members = "".join("-" if ch == "-" else re.escape(ch) for ch in body)
            out.append(f"(?!/)[{'^' if negate else ''}{members}]")
        else:
            out.append(re.escape(c))
    return "".join(out)


def glob_regex(pattern):
    """The regex source (for fullmatch) of an absolute path glob; ValueError if unusable."""
    if not pattern:
        raise ValueError("empty glob")
    if not pattern.startswith("/"):
        raise ValueError(f"path glob {pattern!r} is not absolute (must start with '/')")
    parts = [p for p in pattern.split("/") if p]  # '//' is '/', a trailing '/' is ignored
    if not parts:
        return "/"
    # Runs of '**' components mean the same as one; dropping them avoids needless backtracking.
    parts = [p for k, p in enumerate(parts) if not (p == "**" and k and parts[k - 1] == "**")]
    out = []
    for k, part in enumerate(parts):
        if part == "**":
            last = k == len(parts) - 1
            # Middle: zero or more components. Last: one or more, so '/etc/**' is not '/etc'.
            out.append("(?:/[^/]+)+" if last else "(?:/[^/]+)*")
        elif set(part) == {"*"}:  # a lone '*' is one component, never the empty one of "/"
            out.append("/[^/]+")
        else:
            out.append("/" + _translate_component(part))
    source = "".join(out)
    try:
        re.compile(source)
    except re.error as e:  # a reversed range such as [z-a]
        raise ValueError(f"bad glob {pattern!r}: {e}") from None
    return source


def compile_globs(patterns):
    """One compiled regex whose fullmatch() tells whether a path matches any of the globs."""
    return re.compile("|".join(f"(?:{glob_regex(p)})" for p in patterns))


# --- line numbers --------------------------------------------------------------------------
# tomllib reports lines only for syntax errors. For a semantic error we scan the text: the
# N-th line that is a `[[rule]]` header starts rule N, and the first `key =` line between it
# and the next table header is the key's line (top-level keys: before the first header).
# A header-like line inside a multi-line string could mislead the scan; the only cost is a
# wrong line number in an error message, never a wrong policy.

_HEADER = re.compile(r"\s*\[")
_RULE_HEADER = re.compile(r"""\s*\[\[\s*(rule|"rule"|'rule')\s*\]\]""")
_SINGLE_RULE_HEADER = re.compile(r"""\s*\[\s*(rule|"rule"|'rule')\s*\]""")


def _key_line(lines, first, key):
    """1-based line of `key =` in lines[first:] before the next table header, or None."""
    quoted = re.escape(key)
    pattern = re.compile(rf"""\s*({quoted}|"{quoted}"|'{quoted}')\s*=""")
    for k in range(first, len(lines)):
        if _HEADER.match(lines[k]):
            return None
        if pattern.match(lines[k]):
            return k + 1
    return None


class _Locator:
    def __init__(self, text):
        self.lines = text.splitlines()
        self.rule_headers = [k for k, line in enumerate(self.lines) if _RULE_HEADER.match(line)]

    def top(self, key):
        """Line of a top-level key."""
        return _key_line(self.lines, 0, key) or 1

    def rule_table(self):
        """Line of `rule = ...` or of a `[rule]` header (rules written other than [[rule]])."""
        found = _key_line(self.lines, 0, "rule")
        if found:
            return found
        for k, line in enumerate(self.lines):
            if _SINGLE_RULE_HEADER.match(line):
                return k + 1
        return 1

    def rule(self, index, key=None):
        """Line of rule `index` (0-based) or of one of its keys; `rule =` for inline tables."""
        if index >= len(self.rule_headers):
            return self.rule_table()
        header = self.rule_headers[index]
        return (_key_line(self.lines, header + 1, key) if key else None) or header + 1


# --- values --------------------------------------------------------------------------------

def _strings(key, value):
    """A string or a non-empty list of strings, as a list."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise ValueError(f"{key} must be a string or a non-empty list of strings, not {value!r}")


def parse_errno(key, value):
    """An errno given by name ("EPERM") or number (1..4095)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value <= MAX_ERRNO:
            return value
        raise ValueError(f"{key} = {value}: an errno number must be 1..{MAX_ERRNO}")
    if isinstance(value, str):
        number = getattr(errno_module, value, None) if value.startswith("E") else None
        if isinstance(number, int):
            return number
        raise ValueError(f"{key} = {value!r}: unknown errno name (e.g. EACCES, EPERM, ENOENT)")
    raise ValueError(f"{key} must be an errno name or number, not {value!r}")


def _uids(value):
    items = value if isinstance(value, list) else [value]
    if (not items or not all(isinstance(u, int) and not isinstance(u, bool) for u in items)
            or not all(0 <= u < 2**32 for u in items)):
        raise ValueError(f"uid must be a uid (0..4294967295) or a non-empty list of uids, not {value!r}")
    return frozenset(items)


def _program(value):
    if not isinstance(value, str):
        raise ValueError(f"program must be a string, not {value!r}")
    if not value:
        raise ValueError("program: empty glob")
    if len(value) > COMM_MAX and not any(c in value for c in "*?["):
        raise ValueError(f"program {value!r} can never match: the kernel keeps only the first "
                         f"{COMM_MAX} characters of a program name ({value[:COMM_MAX]!r})")
    return re.compile(fnmatch.translate(value)).match


class _Rule:
    __slots__ = ("name", "ops", "path", "uids", "program", "action", "decisions")

    def __init__(self, name, ops, path, uids, program, action, errno):
        self.name = name
        self.ops = ops  # frozenset of op names, None for every op
        self.path = path  # compiled regex's fullmatch, None for any path
        self.uids = uids  # frozenset, None for any uid
        self.program = program  # compiled regex's match, None for any program
        self.action = action
        # Made once: decide() returns them without allocating. Index: was a log rule matched.
        self.decisions = (Decision(action, errno, False, name), Decision(action, errno, True, name))


def _parse_rule(raw, index, source, where):
    """A _Rule from rule `index` (0-based); `where` (a _Locator) gives the lines of errors."""
    def fail(key, reason):
        raise PolicyError(source, where.rule(index, key), reason)

    if not isinstance(raw, dict):
        fail(None, f"rule {index + 1} must be a table ([[rule]]), not {raw!r}")

    for key in raw:
        if key not in RULE_KEYS:
            fail(key, f"unknown rule key {key!r} (known: {', '.join(RULE_KEYS)})")
    for a, b in (("op", "ops"), ("path", "paths")):
        if a in raw and b in raw:
            fail(b, f"give either {a!r} or {b!r}, not both")

    name = raw.get("name", f"rule {index + 1}")
    if not isinstance(name, str) or not name:
        fail("name", f"name must be a non-empty string, not {name!r}")

    if "action" not in raw:
        fail(None, f"{name}: missing action (one of {', '.join(ACTIONS)})")
    action = raw["action"]
    if action not in ACTIONS:
        fail("action", f"bad action {action!r} (one of {', '.join(ACTIONS)})")

    errno = 0
    if "errno" in raw:
        if action != "deny":
            fail("errno", f"errno is for deny rules only, this rule's action is {action!r}")
        try:
            errno = parse_errno("errno", raw["errno"])
        except ValueError as e:
            fail("errno", str(e))
    elif action == "deny":
        errno = errno_module.EACCES

    ops = None
    op_key = "op" if "op" in raw else "ops" if "ops" in raw else None
    if op_key:
        try:
            ops = frozenset().union(*(resolve(word) for word in _strings(op_key, raw[op_key])))
        except ValueError as e:
            fail(op_key, f"{op_key}: {e}")
        if ops == ALL:
            ops = None

    path = None
    path_key = "path" if "path" in raw else "paths" if "paths" in raw else None
    if path_key:
        try:
            path = compile_globs(_strings(path_key, raw[path_key])).fullmatch
        except ValueError as e:
            fail(path_key, f"{path_key}: {e}")

    uids = program = None
    try:
        if "uid" in raw:
            uids = _uids(raw["uid"])
    except ValueError as e:
        fail("uid", str(e))
    try:
        if "program" in raw:
            program = _program(raw["program"])
    except ValueError as e:
        fail("program", str(e))
    return _Rule(name, ops, path, uids, program, action, errno)


def _matches_any_path(fullmatch, paths):
    for p in paths:
        if fullmatch(p if isinstance(p, str) else os.fsdecode(p)):
            return True
    return False


class Policy:
    """A validated, compiled policy. Build it with load(), from_text() or from_json()."""

    def __init__(self, text, source, default, default_errno, rules):
        self.text = text
        self.source = source
        self.default = default
        self.default_errno = default_errno
        self.rules = rules
        self.rule_count = len(rules)
        code = default_errno if default == "deny" else 0
        self._default = (Decision(default, code, False, "default"), Decision(default, code, True, "default"))
        # Per op, the rules that name it: decide() never looks at a rule that cannot apply.
        self._by_op = {op: tuple(r for r in rules if r.ops is None or op in r.ops) for op in ALL}
        self._any_op = tuple(r for r in rules if r.ops is None)  # for an op name we do not know

    @classmethod
    def load(cls, path):
        source = os.fspath(path)
        try:
            with open(source, "rb") as f:
                data = f.read()
        except OSError as e:
            raise PolicyError(source, None, f"cannot read: {e.strerror}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise PolicyError(source, data[:e.start].count(b"\n") + 1, "not valid UTF-8") from None
        return cls.from_text(text, source)

    @classmethod
    def from_text(cls, text, source="<policy>"):
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            message = str(e)
            found = re.search(r"\(at line (\d+), column (\d+)\)$", message)
            if found:
                line = int(found.group(1))
                message = f"{message[:found.start()].rstrip()} (column {found.group(2)})"
            else:  # "(at end of document)"
                line = max(1, len(text.splitlines()))
            raise PolicyError(source, line, message) from None
        where = _Locator(text)

        for key in raw:
            if key not in TOP_KEYS:
                raise PolicyError(source, where.top(key),
                                  f"unknown key {key!r} (known: {', '.join(TOP_KEYS)})")
        default = raw.get("default", "allow")
        if default not in ("allow", "deny"):
            raise PolicyError(source, where.top("default"), f"default must be 'allow' or 'deny', not {default!r}")
        default_errno = errno_module.EACCES
        if "default_errno" in raw:
            try:
                default_errno = parse_errno("default_errno", raw["default_errno"])
            except ValueError as e:
                raise PolicyError(source, where.top("default_errno"), str(e)) from None

        tables = raw.get("rule", [])
        if not isinstance(tables, list):
            raise PolicyError(source, where.rule_table(), "rules are written [[rule]] (an array of tables)")
        rules = tuple(_parse_rule(table, index, source, where) for index, table in enumerate(tables))
        return cls(text, source, default, default_errno, rules)

    def decide(self, op, paths, uid, program):
        """The decision for one call: op name, its paths (absolute, resolved; none for
        calls without one), the calling thread's real uid and the program name (comm)."""
        if isinstance(paths, (str, bytes)):  # one path given bare: never iterate its characters
            paths = (paths,)
        log = False
        for rule in self._by_op.get(op, self._any_op):
            if rule.uids is not None and uid not in rule.uids:
                continue
            if rule.program is not None and (program is None or not rule.program(program)):
                continue
            if rule.path is not None and not (paths and _matches_any_path(rule.path, paths)):
                continue
            if rule.action == "log":
                log = True
                continue
            return rule.decisions[log]
        return self._default[log]

    def ops_with_rules(self):
        """Op names whose decision may differ from a plain allow: those of deny and log
        rules, every op when the default denies. Other ops may keep the fast path."""
        if self.default == "deny":
            return set(ALL)
        ops = set()
        for rule in self.rules:
            if rule.action != "allow":
                ops |= ALL if rule.ops is None else rule.ops
        return ops

    def to_json(self):
        # The source text travels, not the compiled form: the receiver compiles it again.
        return json.dumps({"policy": 1, "source": self.source, "text": self.text})

    @classmethod
    def from_json(cls, text):
        try:
            data = json.loads(text)
            source, policy_text = data["source"], data["text"]
        except (ValueError, TypeError, KeyError) as e:
            raise PolicyError("<policy json>", None, f"not a policy from to_json(): {e}") from None
        return cls.from_text(policy_text, source)

    def describe(self):
        plural = "rule" if self.rule_count == 1 else "rules"
        default = self.default
        if default == "deny":
            default += f" ({errno_module.errorcode.get(self.default_errno, self.default_errno)})"
        return f"policy {self.source}: {self.rule_count} {plural}, default {default}"

    def __repr__(self):
        return f"<Policy {self.source}: {self.rule_count} rules, default {self.default}>"

