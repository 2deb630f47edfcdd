"""The program a command line runs: found as execvp finds it, and what keeps the agent out of it.

lsca run asks here before it starts anything, so that a command that cannot run fails as
`env CMD` does (127 not found, 126 found but cannot be run), and so that a program the
dynamic loader will not preload the agent into (static, set-uid, set-gid, file
capabilities) is named instead of running unproxied without a word.
"""
import errno
import os
import stat
import struct
import sys

NOT_FOUND, CANNOT_RUN = 127, 126             # coreutils env's exit statuses
SHELL = "/bin/sh"           # what execvp runs a file with when the kernel knows no format for it (ENOEXEC)
MAX_INTERPRETERS = 4        # #! scripts nest at most this deep (the kernel's BINPRM_MAX_RECURSION)
HEADER_SIZE = 256           # the kernel reads a #! line from the first 256 bytes (BINPRM_BUF_SIZE)
PT_INTERP = 3
MAX_PHDRS_SIZE = 65536      # the kernel refuses larger program header tables
# execvp goes on to the next PATH entry on these (glibc posix/execvpe.c); any other error ends the search.
SEARCH_ON = {errno.EACCES, errno.ENOENT, errno.ESTALE, errno.ENOTDIR, errno.ENODEV, errno.ETIMEDOUT}
VFS_CAP_FLAGS_EFFECTIVE = 0x1


class CommandError(Exception):
    """CMD cannot be run: `CMD: reason` and the status env would exit with."""

    def __init__(self, name, err):
        super().__init__(f"{name}: {os.strerror(err)}")
        self.errno = err
        self.status = NOT_FOUND if err == errno.ENOENT else CANNOT_RUN


def exec_error(path):
    """The errno execve(path) fails with before it reads the file, 0 when it gets that far."""
    try:
        st = os.stat(path)
    except OSError as e:
        return e.errno
    # Directories and special files are EACCES to execve, as are files without an x bit for us.
    if not stat.S_ISREG(st.st_mode) or not os.access(path, os.X_OK, effective_ids=True):
        return errno.EACCES
    return 0


def resolve(name, env):
    """The file execvp(name) would run, given the program's environment env; CommandError if none."""
    if not name:
        raise CommandError(name, errno.ENOENT)
    if "/" in name:
        err = exec_error(name)
        if err:
            raise CommandError(name, err)
        return name
    search = env.get("PATH")
    if search is None:
        search = os.confstr("CS_PATH") or "/bin:/usr/bin"
    denied = False
    for directory in search.split(":"):
        path = f"{directory}/{name}" if directory else name      # an empty entry is the cwd
        err = exec_error(path)
        if not err:
            return path
        if err not in SEARCH_ON:
            raise CommandError(name, err)
        denied = denied or err == errno.EACCES
    raise CommandError(name, errno.EACCES if denied else errno.ENOENT)


def shell_command(path, argv):
    """What execvp runs when execve(path) says ENOEXEC: the file as a /bin/sh script."""
    return [SHELL, path] + list(argv[1:])


def read_head(path):
    try:
        with open(path, "rb") as f:
            return f.read(HEADER_SIZE)
    except OSError:
        return None


def script_interpreter(head):
    """The interpreter a #! line names, as the kernel parses it (None when it names none)."""
    line = head[2:].split(b"\n", 1)[0].lstrip(b" \t")
    name = line.replace(b"\t", b" ").split(b" ", 1)[0]
    return os.fsdecode(name) if name else None


class Elf:
    """What the loader needs to know of an ELF file: class, byte order, machine, PT_INTERP."""

    def __init__(self, path):
        """ValueError when path is no ELF file this can read (execve then says what it is)."""
        with open(path, "rb") as f:
            header = f.read(64)
            if len(header) < 52 or header[:4] != b"\x7fELF" or header[4] not in (1, 2) or header[5] not in (1, 2):
                raise ValueError("not an ELF file")
            self.kind = header[4:6]               # class and byte order
            wide = header[4] == 2
            order = "<" if header[5] == 1 else ">"
            self.machine, = struct.unpack_from(order + "H", header, 18)
            if wide:
                phoff, = struct.unpack_from(order + "Q", header, 32)
                phentsize, phnum = struct.unpack_from(order + "HH", header, 54)
                entry = order + "IIQQQQ"            # p_type p_flags p_offset p_vaddr p_paddr p_filesz
            else:
                phoff, = struct.unpack_from(order + "I", header, 28)
                phentsize, phnum = struct.unpack_from(order + "HH", header, 42)
                entry = order + "IIIII"             # p_type p_offset p_vaddr p_paddr p_filesz
            if phentsize < struct.calcsize(entry) or phentsize * phnum > MAX_PHDRS_SIZE:
                raise ValueError("a program header table the kernel refuses")
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            self.interpreter = None
            for i in range(len(table) // phentsize):
                fields = struct.unpack_from(entry, table, i * phentsize)
                if fields[0] == PT_INTERP:
                    offset, size = (fields[2], fields[5]) if wide else (fields[1], fields[4])
                    f.seek(offset)
                    self.interpreter = os.fsdecode(f.read(min(size, 4096)).split(b"\0", 1)[0])
                    break


_OWN = None


def own_elf():
    """This Python's ELF facts: the agent is built for its machine and loaded by its loader."""
    global _OWN
    if _OWN is None:
        _OWN = Elf(os.path.realpath(sys.executable))
    return _OWN


def is_dynamic_loader(path):
    """Whether path is the dynamic loader itself (run directly, it preloads like any program)."""
    try:
        return own_elf().interpreter is not None and os.path.samefile(path, own_elf().interpreter)
    except OSError:
        return False


def statically_linked(path):
    """Whether path is an ELF program of this machine with no dynamic loader; None: not one we
    can judge (unreadable, another machine's: execve or binfmt_misc decide what happens)."""
    try:
        elf = Elf(path)
        ours = own_elf()
    except (OSError, ValueError):
        return None
    if (elf.kind, elf.machine) != (ours.kind, ours.machine):
        return None
    return elf.interpreter is None and not is_dynamic_loader(path)


def no_new_privs():
    try:
        with open("/proc/self/status") as f:
            return any(line.split() == ["NoNewPrivs:", "1"] for line in f)
    except OSError:
        return False


def file_capabilities(path):
    """Whether the file carries capabilities the exec would raise (security.capability)."""
    try:
        raw = os.getxattr(path, "security.capability")
    except OSError:
        return False
    if len(raw) < 12:
        return False
    magic, permitted = struct.unpack_from("<II", raw, 0)
    high = struct.unpack_from("<I", raw, 12)[0] if len(raw) >= 16 else 0
    return bool(magic & VFS_CAP_FLAGS_EFFECTIVE or permitted or high)


def secure_exec(path):
    """Why the kernel would mark exec'ing path as secure (AT_SECURE: the dynamic loader then
    ignores LD_PRELOAD with a path): 'is set-uid', 'is set-gid', 'has file capabilities'; None."""
    try:
        st = os.stat(path)
        if os.statvfs(path).f_flag & os.ST_NOSUID or no_new_privs():
            return None                         # the kernel ignores set-id bits and file capabilities
    except OSError:
        return None
    # Secure when the exec changes who the program is: its effective ids differ from the real ones.
    if st.st_mode & stat.S_ISUID and st.st_uid != os.getuid():
        return "is set-uid"
    group_bits = stat.S_ISGID | stat.S_IXGRP    # set-gid without group x is mandatory locking
    if st.st_mode & group_bits == group_bits and st.st_gid != os.getgid():
        return "is set-gid"
    # Capabilities make it secure only for a program that does not run as real root.
    if os.getuid() != 0 and file_capabilities(path):
        return "has file capabilities"
    return None


def agent_barrier(path):
    """Why the agent will not run in what exec'ing path runs, as a sentence's end, or None.
    Scripts are judged by their interpreter (the kernel ignores a script's own set-id bits)."""
    program, via = path, None
    for _ in range(MAX_INTERPRETERS + 1):
        head = read_head(program)
        if head is None:
            break                               # unreadable (execute-only): its mode still tells
        if head[:4] == b"\x7fELF":
            break
        if head[:2] == b"#!":
            interpreter = script_interpreter(head)
        else:
            interpreter = SHELL                 # ENOEXEC: execvp runs it with /bin/sh
        if interpreter is None or interpreter == program:
            return None
        program = via = interpreter
    else:
        return None
    who = f" runs {via}, which" if via else ""
    if statically_linked(program):
        return f"{who} is statically linked: the agent cannot run in it"
    reason = secure_exec(program)
    if reason:
        return f"{who} {reason}: the dynamic loader ignores LD_PRELOAD for it"
    return None
