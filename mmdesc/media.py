"""What every modality that reads files checks before it opens one."""
from __future__ import annotations

import os
import stat

from mmdesc.errors import MediaError


def check_file(path: str | os.PathLike, kind: str) -> int:
    """The size in bytes of the regular, non-empty file ``path``; otherwise a MediaError naming
    what it is instead (missing, a folder, a FIFO or device that would block or never end,
    empty). ``kind`` names what was expected ("an image", "a video", "a sound file")."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MediaError(path, "no such file") from None
    except OSError as e:
        raise MediaError(path, f"cannot read file ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise MediaError(path, f"is a directory, not {kind}")
    if not stat.S_ISREG(st.st_mode):
        raise MediaError(path, "not a regular file (a FIFO, a device or a socket)")
    if st.st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    return st.st_size
