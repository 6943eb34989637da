"""
What every command shares: one `error:` line and the project's exit status for a failure (2 bad
input, 1 the environment, 130 interrupted), termination signals handled as Ctrl-C, and result
folders that appear whole or not at all.
"""

import argparse
import contextlib
import errno
import os
import re
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading


# A hidden work folder is named .NAME.partial-HOST-PID-RANDOM (or .replaced- for the old
# result being replaced), so that a later run can tell whether its owner still runs: folders
# of a process that was killed (SIGKILL, a crash, a power cut) are removed by the next run in
# the same parent folder. The host is in the name because a parent on a shared file system can
# hold folders of processes on other machines, whose ids mean nothing here: those are left alone.
HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
WORK_FOLDER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|replaced)-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[a-z0-9_]+$")


def process_alive(pid):
    try:
        os.kill(pid, 0)  # signal 0 only checks that the process exists
    except (ProcessLookupError, OverflowError):  # gone, or a number no process id can be
        return False
    except PermissionError:  # it exists, and belongs to another user
        return True
    return True


def remove_stale_work_folders(parent):
    """Remove the hidden work folders in `parent` whose process is gone. A replaced result whose
    new one never took its place (the run was killed between the two renames) is put back. Only
    real folders are touched (os.lstat): a symbolic link of a work folder's name, planted or not,
    is left alone, so that nothing outside `parent` is ever moved into it or removed."""
    try:
        entries = os.listdir(parent)
    except OSError:
        return
    for entry in entries:
        match = WORK_FOLDER.match(entry)
        path, final = os.path.join(parent, entry), os.path.join(parent, match["name"]) if match else None
        if not match or match["host"] != HOST or not is_real_folder(path) or process_alive(int(match["pid"])):
            continue
        old = os.path.join(path, match["name"])
        if match["kind"] == "replaced" and is_real_folder(old):
            if not os.path.lexists(final):
                os.rename(old, final)
                print(f"note: {final}: put back from {path}, left by process {match['pid']} which is gone", file=sys.stderr)
            elif not is_real_folder(final):
                continue  # not the result that replaced it: the old one is kept where it is
        shutil.rmtree(path, ignore_errors=True)
        print(f"note: {path}: removed, left by process {match['pid']} which is gone", file=sys.stderr)


def is_real_folder(path):
    """Whether `path` is a folder itself, not a symbolic link (to one or not)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def folder_in_use(final):
    """The id of a live process on this machine writing `final` (its hidden work folder is
    beside it), or None. Another run's result is never replaced under it: a run that would
    write there is refused at once rather than at its end."""
    parent, name = os.path.split(os.path.normpath(final))
    try:
        entries = os.listdir(parent or ".")
    except OSError:
        return None
    for entry in entries:
        match = WORK_FOLDER.match(entry)
        if match and match["name"] == name and match["host"] == HOST and process_alive(int(match["pid"])):
            return int(match["pid"])
    return None


def make_folders(path):
    """os.makedirs(path), returning the folders it created, outermost first, so that a failure
    can take them away again."""
    missing, folder = [], os.path.abspath(path)
    while not os.path.exists(folder):
        if os.path.islink(folder):
            raise NotADirectoryError(errno.ENOTDIR, "a symbolic link to nothing is in the way of the output folder", folder)
        missing.append(folder)
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise NotADirectoryError(errno.ENOTDIR, "a file is in the way of the output folder", folder)
    os.makedirs(path, exist_ok=True)  # with the user's umask, like any folder
    return missing[::-1]


def remove_empty_folders(folders):
    """Remove the folders of `make_folders`, innermost first, as long as they are empty."""
    for folder in reversed(folders):
        try:
            os.rmdir(folder)
        except OSError:
            return


def current_umask():
    umask = os.umask(0)  # the only way to read it is to set it
    os.umask(umask)
    return umask


@contextlib.contextmanager
def staged_folder(final, replace=False, replace_empty=False):
    """Build a result folder all or nothing: yields a hidden work folder beside `final`, which
    becomes `final` when the block ends without an error, and is removed, with any parent folder
    made for it, when it fails or is interrupted. Whatever is at `final` by then (a folder, a
    file, a symbolic link, dangling or not: the link itself, never what it points to) is
    replaced only when `replace` is set, or with `replace_empty` when it is an empty folder
    (nothing is lost); else the result is refused and what is there kept as it is: another run
    may have finished there meanwhile. Stale work folders of dead processes beside it are
    removed first."""
    parent, name = os.path.split(os.path.normpath(final))
    parent = parent or "."
    made = make_folders(parent)
    umask = current_umask()
    remove_stale_work_folders(parent)
    owner = f"{HOST}-{os.getpid()}-"
    work = None
    try:
        work = tempfile.mkdtemp(prefix=f".{name}.partial-{owner}", dir=parent)
        yield work
        os.chmod(work, 0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
        publish(work, final, replace or (replace_empty and is_empty_folder(final)), f".{name}.replaced-{owner}")
    except BaseException:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        remove_empty_folders(made)
        raise


def is_empty_folder(path):
    return is_real_folder(path) and not os.listdir(path)


def publish(work, final, replace, trash_prefix):
    """Rename `work` to `final`; what is at `final` is moved aside first when `replace` is set,
    and put back if the new result cannot take its place. A failure names `final`, not the
    hidden work folder, which is gone by the time the error is shown."""
    parent, name = os.path.split(final)
    if not os.path.lexists(final):
        try:
            os.rename(work, final)
        except OSError as error:
            raise OSError(error.errno, error.strerror, final) from None
        return
    if not replace:
        raise FileExistsError(errno.EEXIST, "appeared while this result was being written (by another run?); "
                                            "kept as it is", final)
    trash = tempfile.mkdtemp(prefix=trash_prefix, dir=parent or ".")
    old = os.path.join(trash, name)
    os.rename(final, old)
    try:
        os.rename(work, final)
    except BaseException:
        os.rename(old, final)  # the old result stays until the new one is in place
        raise
    shutil.rmtree(trash, ignore_errors=True)


def os_error_line(error, path):
    """`PATH: problem` of an OSError; `path` is named when the error names no file (a failed
    write() does not)."""
    where = os.fsdecode(error.filename) if error.filename is not None else path
    return f"{where}: {error.strerror or error}"


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a bad flag reported as every other bad input is: one line, exit status 2."""

    def error(self, message):
        print(f"error: {message} (--help lists the flags)", file=sys.stderr)
        sys.exit(2)


@contextlib.contextmanager
def exit_status(bad_input, output, interrupted="interrupted: nothing was written", memory_hint="", source=None):
    """How every command ends on a failure: one line on stderr, no traceback, and the project's
    exit status: 2 for bad input or flags (an exception of the types `bad_input`; or a reader's
    ValueError or cv2.error, a file it could not make sense of, named as `source`, the input
    the command reads), 1 for the environment (an OSError, naming `output` when the error names
    no file; or out of memory), 130 for an interrupt. Other exceptions are programming errors
    and keep their traceback."""
    where = "" if source is None else f"{source}: "
    try:
        yield
    except bad_input as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        print(f"error: {os_error_line(error, output)}", file=sys.stderr)
        sys.exit(1)
    except MemoryError:
        print(f"error: {where}out of memory (beyond the plan's estimate){memory_hint}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        sys.exit(130)
    except reader_errors() as error:
        print(f"error: {where}{first_line(error)}", file=sys.stderr)
        sys.exit(2)


def reader_errors():
    """What a reader raises for a file it cannot make sense of, beyond this project's errors:
    numpy's and h5py's ValueError, OpenCV's cv2.error (only where OpenCV was imported: nothing
    else can have raised it)."""
    cv2 = sys.modules.get("cv2")
    return (ValueError,) + ((cv2.error,) if cv2 is not None and isinstance(getattr(cv2, "error", None), type) else ())


def first_line(error):
    """An exception's message on one line (its first), or its type's name when it has none."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


# Set when SIGTERM or SIGHUP came. The handler raises KeyboardInterrupt where the main thread
# happens to be, and Python drops an exception raised inside a __del__ or a weakref callback; with
# later signals ignored, the run would then go on. Long loops check this (check_terminated).
TERMINATED = threading.Event()


def check_terminated():
    """Raise KeyboardInterrupt if a termination signal came but its exception was lost."""
    if TERMINATED.is_set():
        raise KeyboardInterrupt


def prepare_command_line():
    """For a command's main: SIGTERM and SIGHUP (`kill`, a closed terminal, a batch system's time
    limit) raise KeyboardInterrupt like Ctrl-C, so that the same clean-up runs (work folders
    removed, exit 130), and a second one does not cut that clean-up short; and a path that is
    not valid UTF-8 is printed escaped rather than failing the print."""
    def interrupt(signum, frame):
        for name in ("SIGTERM", "SIGHUP"):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        TERMINATED.set()
        raise KeyboardInterrupt
    TERMINATED.clear()
    if threading.current_thread() is threading.main_thread():  # the only thread that may set handlers
        for name in ("SIGTERM", "SIGHUP"):
            signal.signal(getattr(signal, name), interrupt)
    if hasattr(sys.stdout, "reconfigure"):  # not when a caller replaced it (a test capturing output)
        sys.stdout.reconfigure(errors="backslashreplace")


def safe_name(text, fallback="run"):
    """A folder name made from a file name: characters that are not letters, digits, '.', '+'
    or '-' (path separators, control characters, bytes that are not UTF-8) become '_', and no
    leading dot (no hidden folder, no '..')."""
    name = re.sub(r"[^\w.+-]", "_", os.fsdecode(text)).lstrip(".")
    return name or fallback


# The name a command's usage line shows: set by the `evinr` command for the subcommand it runs
# (`evinr reconstruct`), else argparse's own (the script's file name).
PROGRAM = None


def program_name():
    return PROGRAM
