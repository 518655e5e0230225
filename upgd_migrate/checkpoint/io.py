"""The only module that calls ``torch.load`` / ``torch.save``.

Loading is always ``weights_only=True`` on the CPU: a checkpoint is untrusted input. One that
needs other globals is refused, naming them, unless the user admits those exact names. Saving
is atomic (temp file in the same folder, fsync, ``os.replace``) and deterministic: we always
save through a file object, so the archive's inner folder is ``archive`` whatever the file is
called, and the same object gives the same bytes.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

import torch

from upgd_migrate.errors import UpgdMigrateError, raise_if_interrupted
from upgd_migrate.fileio import atomic_writer  # the one atomic writer, shared with configs
from upgd_migrate.sparsefile import SliceReader, before_read, fill, is_sparse

_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([\w.]+)")
_BUILD_IN_MESSAGE = re.compile(r"but got <class '([\w.]+)'>")
# numpy classes that hold or build data only (never code): object and structured (void)
# dtypes are left out, their elements can be arbitrary objects.
_NOT_DATA_DTYPES = ("ObjectDType", "VoidDType")


class CheckpointError(UpgdMigrateError):
    """A file that cannot be read as a checkpoint (missing, corrupt, not a torch file)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose unpickling needs globals the user did not allow."""

    def __init__(self, source: str, names: Sequence[str]) -> None:
        self.names = list(names)
        listed = ", ".join(self.names) if self.names else "unknown globals"
        hint = " ".join(f"--allow-global {n}" for n in self.names) or "--allow-global MODULE.NAME"
        super().__init__(f"{source}: refused: loading it needs globals outside the weights-only "
                         f"allowlist: {listed} (if you trust the file, re-run with {hint})")


def resolve_globals(names: Sequence[str]) -> list[Any]:
    """Turn ``MODULE.NAME`` strings into the objects ``torch.serialization.safe_globals`` wants."""
    out = []
    for name in names:
        module_name, _, attr = name.rpartition(".")
        try:
            out.append(getattr(importlib.import_module(module_name), attr))
        except (ImportError, AttributeError, ValueError) as e:
            raise UpgdMigrateError(f"--allow-global {name}: cannot import it ({e})") from e
    return out


def numpy_data_globals() -> list[Any]:
    """numpy's data-only globals, admitted by default: array and dtype reconstruction, as
    transformers admits them to load its ``rng_state.pth`` weights-only. Both spellings of
    ``_reconstruct`` (numpy 1 wrote ``numpy.core``, numpy 2 writes ``numpy._core``)."""
    try:
        import numpy as np
    except ImportError:  # no numpy: a file that needs it is refused by name as any other
        return []
    core = getattr(np, "_core", None) or np.core
    rebuild = core.multiarray._reconstruct
    out: list[Any] = [(rebuild, "numpy.core.multiarray._reconstruct"),
                      (rebuild, "numpy._core.multiarray._reconstruct"), np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    for name in sorted(vars(dtypes) if dtypes is not None else ()):
        if name.endswith("DType") and name not in _NOT_DATA_DTYPES:
            out.append(getattr(dtypes, name))
    return out


def _admitted_names() -> set[str]:
    return {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}"
            for g in numpy_data_globals()}


def _pickle_globals(head: bytes) -> list[str]:
    """Globals a plain (non-zip) pickle imports, read by pickletools: nothing is executed."""
    names, strings = [], []
    try:
        for op, arg, _ in pickletools.genops(head):
            if op.name == "GLOBAL":
                names.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # truncated or not a pickle: report what was found so far
        pass
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        allowed = set(_get_allowed_globals())
    except Exception:  # private API moved: name everything
        allowed = set()
    return list(dict.fromkeys(n for n in names if n not in allowed))


def _unsafe_names(source: Any, error: Exception) -> list[str]:
    """Every name the hint must give, so that following it works the first time: the file's
    globals outside the allowlists, and the class the refusal names when an admitted global
    builds an instance of another class (a numpy dtype builds ``numpy.dtypes.UInt32DType``)."""
    built = _BUILD_IN_MESSAGE.findall(str(error))
    admitted = _admitted_names()
    return list(dict.fromkeys(n for n in _file_globals(source, error) + built
                              if n not in admitted))


def _file_globals(source: Any, error: Exception) -> list[str]:
    if hasattr(source, "seek"):
        source.seek(0)
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(source))
    except Exception:  # not a zip checkpoint
        pass
    if hasattr(source, "read"):
        source.seek(0)
        return _pickle_globals(source.read())
    with open(source, "rb") as fh:
        return _pickle_globals(fh.read()) or _GLOBAL_IN_MESSAGE.findall(str(error))


def _is_pickle(source: Any) -> bool:
    if hasattr(source, "read"):
        source.seek(0)
        return source.read(1) == b"\x80"
    with open(source, "rb") as fh:
        return fh.read(1) == b"\x80"


def _is_torch_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/data.pkl") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _load(source: Any, label: str, allow: Sequence[str], mmap: bool,
          device: str = "cpu") -> Any:
    try:
        admitted = [*numpy_data_globals(), *resolve_globals(allow)]
        with torch.serialization.safe_globals(admitted), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Detected pickle protocol")  # we refuse it anyway
            return torch.load(source, map_location=device, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise_if_interrupted()
        names = _unsafe_names(source, e)
        if names or "GLOBAL" in str(e):
            raise UnsafeCheckpointError(label, names) from e
        if not _is_pickle(source) and not zipfile.is_zipfile(source):
            raise CheckpointError(f"{label}: not a readable torch checkpoint") from e
        raise CheckpointError(f"{label}: refused: not loadable with weights_only=True "
                              f"({_first_line(e)})") from e
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise_if_interrupted()
        raise CheckpointError(f"{label}: not a readable torch checkpoint ({_first_line(e)})") from e


def _first_line(e: Exception) -> str:
    """The informative line of torch's long messages (the one after 'WeightsUnpickler error')."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for i, line in enumerate(lines[:-1]):
        if line.endswith("WeightsUnpickler error:"):
            return lines[i + 1]
    return lines[0] if lines else type(e).__name__


def load(path: Path, allow_globals: Sequence[str] = (), zipped: bool | None = None) -> Any:
    """Load a torch file on the CPU, weights only; memory-mapped when the format allows it.
    ``zipped``: whether it is a torch zip, where the caller knows (None: look)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:  # torch says only "EOFError" or "Ran out of input"
        raise CheckpointError(f"{path}: empty file (0 bytes)")
    if is_sparse(path) and _SPARSE_READS != "all":  # a torch zip in a bucket, staged sparsely
        return _load_sparse(path, allow_globals)
    fill(path)  # a sparse stand-in: every hole fetched before a load that reads tensor data
    mmap = _is_torch_zip(path) if zipped is None else zipped
    return _load(str(path), str(path), allow_globals, mmap=mmap)


# How load() reads a sparse stand-in of a torch zip in a bucket: "all" (fetch every byte,
# then load), "meta" (the pickle only: every tensor on the meta device, so reading its data
# raises instead of reading a hole), "states" (as "meta", with the tensors of every optimizer
# and VGS state fetched by range). See upgd_migrate.checkpoint.zipslice.
_SPARSE_READS = "all"


@contextlib.contextmanager
def sparse_reads(mode: str) -> Iterator[None]:
    global _SPARSE_READS
    old, _SPARSE_READS = _SPARSE_READS, mode
    try:
        yield
    finally:
        _SPARSE_READS = old


def _load_sparse(path: Path, allow_globals: Sequence[str]) -> Any:
    from upgd_migrate.checkpoint import zipslice

    with open(path, "rb", buffering=0) as fh:  # read through, fetching each range first
        whole = SliceReader(path, fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
        root = _load(whole, str(path), allow_globals, mmap=False, device="meta")
    if _SPARSE_READS == "meta":
        return root
    try:
        return zipslice.real_states(root, path)
    except zipslice.NotByRange:
        fill(path)
        return _load(str(path), str(path), allow_globals, mmap=True)


def load_bytes(data: bytes, label: str, allow_globals: Sequence[str] = ()) -> Any:
    """Load a torch file held in memory (a member of a zip), weights only."""
    if not data:
        raise CheckpointError(f"{label}: empty file (0 bytes)")
    return _load(io.BytesIO(data), label, allow_globals, mmap=False)


def load_slice(path: Path, offset: int, length: int, label: str,
               allow_globals: Sequence[str] = ()) -> Any:
    """Load the torch payload stored at ``offset`` in ``path`` (a DCP entry), weights only.

    Only ``length`` bytes are read, so a data file's other entries (the model weights) are
    never touched, and a tensor's bytes go from the file straight into the tensor.
    """
    try:
        before_read(path, offset, length)  # a sparse stand-in of a bucket's object: one fetch
        fh = open(path, "rb")
    except OSError as e:
        raise CheckpointError(f"{label}: cannot read ({e.strerror or e})") from None
    with fh:
        present = max(0, min(length, os.fstat(fh.fileno()).st_size - offset))
        if present != length:
            raise CheckpointError(f"{label}: truncated: {present} of {length} bytes present")
        if not length:
            raise CheckpointError(f"{label}: empty file (0 bytes)")
        return _load(SliceReader(path, fh.fileno(), offset, length), label, allow_globals,
                     mmap=False)


def save_to(obj: Any, fh: IO[bytes]) -> None:
    try:
        torch.save(obj, fh)
    except RuntimeError as e:
        # torch's C++ writer wraps the error our file object raised (a full disk, a signal)
        # in "[enforce fail at inline_container.cc:...]": report the real one.
        raise_if_interrupted()
        cause = e.__cause__ or e.__context__
        if isinstance(cause, OSError):
            raise cause from None
        raise OSError(f"torch.save failed ({_first_line(e).split(']')[-1].strip()})") from None


def save_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    save_to(obj, buf)
    return buf.getvalue()


def save(obj: Any, path: Path) -> None:
    """Atomically write ``torch.save(obj)`` to ``path``."""
    with atomic_writer(path) as fh:
        save_to(obj, fh)


def write_bytes(path: Path, data: bytes) -> None:
    """Atomically write raw bytes (a rewritten zip, a sidecar)."""
    with atomic_writer(path) as fh:
        fh.write(data)
