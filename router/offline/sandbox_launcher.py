"""Inside the sandbox's fresh namespaces: make every filesystem read-only but the scratch directory, cap
memory, then exec the program. Standard library only (it runs under `python -I`). Usage:
    sandbox_launcher.py SCRATCH MEMORY_MB PYTHON PROGRAM
Exit code 97 with a `sandbox:` message on stderr means isolation failed and the program did not run."""
import ctypes
import os
import resource
import sys

MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096
SETUP_FAILED = 97


def fail(message: str) -> None:
    sys.stderr.write(f"sandbox: {message}\n")
    sys.exit(SETUP_FAILED)


def mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            # field 5 is the mount point, with space, tab, newline and backslash octal-escaped
            points.append(line.split()[4].encode().decode("unicode_escape"))
    return points


def main() -> None:
    scratch, memory_mb, python, program = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    libc = ctypes.CDLL(None, use_errno=True)

    def mount(target: str, flags: int, source: str | None = None) -> None:
        if libc.mount(source and source.encode(), target.encode(), None, flags, None) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), target)

    try:
        mount(scratch, MS_BIND, scratch)  # its own mount, so it stays writable below
        for point in mount_points():
            if point == scratch or point.startswith(scratch + "/"):
                continue
            try:
                flags = os.statvfs(point).f_flag  # ST_* equal MS_*: keep the flags this namespace may not drop
            except OSError:
                continue  # hidden under another mount: not reachable, nothing to protect
            if not flags & MS_RDONLY:
                mount(point, flags | MS_REMOUNT | MS_BIND | MS_RDONLY)
    except OSError as exc:
        fail(f"cannot make {exc.filename} read-only: {exc.strerror}")
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.chdir(scratch)
    os.execv(python, [python, "-I", program])


if __name__ == "__main__":
    main()
