"""Writing files so that a failure never loses the user's data.

* :func:`write_atomic` writes a file whole or not at all: a temporary file in
  the target's directory, flushed and synced, then renamed over the target.
  A symlink is written through (its target is replaced, the link stays); the
  new file keeps an existing file's permission bits, else gets the umask's
  (``0o666 & ~umask``), as ``open(path, "w")`` would.
* :func:`write_group` writes several files as one: every temporary file is
  written first, then they are renamed in turn; if a rename fails, the files
  already replaced get their old contents back (kept as hard links until the
  end), so the group is wholly old or wholly new.
* :func:`check_writable` says, before long work starts, whether a path can be
  written (its directory exists and is writable, it is not a directory).
"""
import os
import shutil
import stat
import tempfile
import uuid

__all__ = ["write_atomic", "write_group", "check_writable", "unwritable"]


def _real(path):
    # The file a write to `path` should replace: through symlinks.
    return os.path.realpath(os.fspath(path))


def _umask_mode():
    # 0o666 & ~umask, the umask read without changing it where Linux says it
    # (setting it to read it would briefly change it for every thread)
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return 0o666 & ~mask


def _temp(real, payload):
    # A synced temporary file next to `real` holding `payload` (bytes or
    # str), with the mode the target should end with.
    directory = os.path.dirname(real)
    # a short name: the target's own may already be near the 255-byte limit
    fd, tmp = tempfile.mkstemp(prefix=".gru_cy-tmp-", dir=directory)
    try:
        try:
            mode = stat.S_IMODE(os.stat(real).st_mode)
        except FileNotFoundError:
            mode = _umask_mode()
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb" if isinstance(payload, bytes) else "w",
                       **({} if isinstance(payload, bytes) else {"encoding": "utf-8"})) as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def write_atomic(path, payload):
    """Write ``payload`` (bytes or str, UTF-8) to ``path`` whole or not at all."""
    write_group([(path, payload)])


def write_group(items):
    """Write each ``(path, payload)`` of ``items``: all new or all old."""
    reals = [_real(p) for p, _ in items]
    temps = []
    try:
        for real, (_, payload) in zip(reals, items):
            temps.append(_temp(real, payload))
    except BaseException:
        for t in temps:
            _unlink(t)
        raise
    backups = []          # (real, backup or None, replaced)
    try:
        for real, tmp in zip(reals, temps):
            backup = None
            if os.path.exists(real):
                backup = os.path.join(os.path.dirname(real),
                                      f".gru_cy-old-{uuid.uuid4().hex[:16]}")
                try:
                    os.link(real, backup)
                except OSError:            # no hard links here: a copy
                    shutil.copy2(real, backup)
            # marked replaced before the rename: should it fail or be interrupted,
            # the rollback puts the old file back either way (the backup is it)
            backups.append([real, backup, True])
            os.replace(tmp, real)
    except BaseException:
        # put back what was replaced; remove what was new
        for real, backup, replaced in reversed(backups):
            try:
                if replaced and backup is not None:
                    if os.path.exists(real) and os.path.samefile(backup, real):
                        _unlink(backup)       # never replaced (rename of two links: a no-op)
                    else:
                        os.replace(backup, real)
                elif replaced:
                    _unlink(real)
                elif backup is not None:
                    _unlink(backup)
            except OSError:
                pass
        for t in temps:
            _unlink(t)
        raise
    for _, backup, _ in backups:
        if backup is not None:
            _unlink(backup)


def unwritable(outputs):
    """The message of the first ``(path, option)`` of ``outputs`` that cannot
    be written (paths None are skipped), or None: a command's check of its
    output options before its work."""
    for path, what in outputs:
        if path:
            try:
                check_writable(path, what)
            except ValueError as e:
                return str(e)
    return None


def check_writable(path, what):
    """ValueError naming ``what`` unless ``path`` could be written now."""
    path = os.fspath(path)
    real = _real(path)
    directory = os.path.dirname(real) or "."
    if os.path.isdir(real):
        raise ValueError(f"{what}: {path!r} is a directory, expected a file path")
    if not os.path.isdir(directory):
        raise ValueError(f"{what}: the directory of {path!r} does not exist "
                         f"({directory!r})")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: cannot write in the directory of {path!r} "
                         f"({directory!r}: permission denied)")
    if os.path.exists(real) and not os.access(real, os.W_OK):
        raise ValueError(f"{what}: {path!r} exists and is not writable")
