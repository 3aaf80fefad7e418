"""The change signal: a file whose modification time moves whenever a deployment changes.

Every serving process stats it on each request (about a microsecond) and reloads its routes when it
moved, so a promotion reaches every worker process within one request, with no per-request query.
"""

import os
import tempfile
import time
from pathlib import Path

from django.conf import settings


def signal_path():
    return Path(settings.SERVING_SIGNAL_FILE)


def signal_bump():
    """Tell every serving process to reload its routes (atomic replace, so a reader never sees a torn file)."""
    path = signal_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".signal-")
    with os.fdopen(handle, "w") as file:
        file.write(str(time.time_ns()))
    os.replace(temporary, path)


def signal_read():
    """The current generation: (mtime_ns, inode) of the file, or None if it does not exist yet."""
    try:
        stat = os.stat(settings.SERVING_SIGNAL_FILE)  # no Path built per request: it cost 5 of the 9 µs
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_ino
