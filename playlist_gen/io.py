"""Errors and atomic file output shared by every stage."""

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


class PipelineError(Exception):
    """A problem the user can fix (bad input, a missing earlier stage); shown as one line."""


def require_file(path, made_by: str) -> Path:
    """Fail early, saying which stage produces a missing input."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path} not found: {made_by}")
    return path


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", encoding: str | None = "utf-8"):
    """Write to a temp file beside `path`, then rename over it, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding,
                       newline=None if "b" in mode else "") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def png_plot(path, figsize: tuple[float, float], dpi: int, margins: dict):
    """One matplotlib axes, saved as a PNG at `path` (atomically) when the block ends. A bare `Figure` (no pyplot:
    no global figure state, no GUI backend to choose) with fixed margins: tight_layout drew every figure twice,
    half of its time, and pyplot's import a third of a second more per process."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    ax = fig.add_subplot()
    yield ax
    fig.subplots_adjust(**margins)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)


@contextlib.contextmanager
def atomic_dir(path):
    """Build a directory under a temp name, then swap it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path, obj) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def read_json(path, made_by: str):
    path = require_file(path, made_by)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path}: not valid JSON ({e}); {made_by}") from None


NPZ_ALIGN = 64  # bytes; what numpy aligns an .npy's data to within its file


def write_npz(f, arrays: dict) -> None:
    """np.savez's format (an uncompressed zip of .npy files, read by np.load), with every array's data at a multiple
    of NPZ_ALIGN bytes in the file: mapped_npz then gives aligned arrays, which numpy and scipy use without a copy.
    Each member's local header carries an extra field of padding (ID 0x4e50, "NP"; zip readers skip unknown ones)."""
    import io
    import struct
    import zipfile

    import numpy as np

    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.asanyarray(array), allow_pickle=False)  # data at a multiple of 64 in it
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            pad = -(f.tell() + 30 + len(info.filename.encode()) + 4) % NPZ_ALIGN
            info.extra = struct.pack("<HH", 0x4E50, pad) + bytes(pad)
            zf.writestr(info, npy.getbuffer())


def mapped_npz(path) -> dict:
    """The arrays of an uncompressed .npz (what np.savez writes), memory-mapped copy-on-write instead of read into new
    memory: a start touches only the pages it uses, and pages already in the page cache are mapped, not copied into
    freshly zeroed memory (this VM took up to 2.4 s to fault in 200 MB of new memory). Writes to the arrays stay in
    this process. A member that is compressed or holds objects raises ValueError; a damaged zip BadZipFile."""
    import mmap
    import struct
    import zipfile

    import numpy as np

    with zipfile.ZipFile(path) as zf:
        members = [i for i in zf.infolist() if i.filename.endswith(".npy")]
    out = {}
    with open(path, "rb") as f:
        whole = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        for info in members:
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{info.filename} is compressed")
            f.seek(info.header_offset)
            local = f.read(30)
            if local[:4] != b"PK\x03\x04":
                raise zipfile.BadZipFile(f"no local header for {info.filename}")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            f.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(f)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = header(f)
            if dtype.hasobject:
                raise ValueError(f"{info.filename} holds Python objects")
            out[info.filename[:-4]] = np.ndarray(shape, dtype, buffer=whole, offset=f.tell(),
                                                 order="F" if fortran else "C")
    return out


@contextlib.contextmanager
def exclusive(folder, who: str):
    """Hold `folder` for one run of `who` (an flock on folder/.lock, which the kernel releases when the process
    ends, `kill -9` included): a second run on the same folder is refused while the first holds it."""
    import fcntl

    Path(folder).mkdir(parents=True, exist_ok=True)
    with open(Path(folder) / ".lock", "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise PipelineError(f"{folder} is in use by {who} ({holder}); wait for it to finish, or give another "
                                "folder") from None
        f.seek(0)
        f.truncate()
        f.write(f"{who}, pid {os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
