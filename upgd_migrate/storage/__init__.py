"""Where paths and URLs meet the file system: the one place that knows about object stores.

A local path never comes here: the commands test :func:`is_url` first and keep their own code
path (and speed). A URL (``s3://``, ``gs://``, ``hf://``, ``memory://``, ``file://``) goes
through fsspec: the checkpoint is staged into a private local folder, the usual pipeline runs on
it, and what changed goes back whole or not at all (:mod:`upgd_migrate.storage.write`,
which says which guarantee each backend gives).

An in-place or reading run stages a DCP folder sparsely (:mod:`upgd_migrate.storage.sparse`):
its data objects are read by byte range, entry by entry, never whole; a torch zip keeps only its
directory and pickle until its tensors are read (:mod:`upgd_migrate.storage.zipranges`). The
package imports fsspec (lazily), :mod:`upgd_migrate.errors`, :mod:`upgd_migrate.fileio` and the
DCP metadata reader; no command.
"""
from __future__ import annotations

import io
import json
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from upgd_migrate import errors
from upgd_migrate.errors import UpgdMigrateError
from upgd_migrate.sparsefile import forget_range_fetchers, holes_kept

# scheme -> (module that implements it, the extra that installs it)
BACKENDS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"),
            "gcs": ("gcsfs", "gcs"), "hf": ("huggingface_hub", "hf"),
            "memory": ("fsspec", "fsspec"), "file": ("fsspec", "fsspec")}


def is_url(path: Any) -> bool:
    """``scheme://...`` (a pathlib.Path never is one: it folds ``//`` into ``/``)."""
    if not isinstance(path, str):
        return False
    scheme, sep, _ = path.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").isalnum()


def scheme_of(url: str) -> str:
    return str(url).partition("://")[0].lower()


def parse_options(values: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a value is a JSON scalar when it parses as one (``true``, ``3``)."""
    options: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UpgdMigrateError(f"--storage-option {item!r}: expected KEY=VALUE")
        try:
            value = json.loads(raw)
            options[key] = value if not isinstance(value, (dict, list)) else raw
        except json.JSONDecodeError:
            options[key] = raw
    return options


def filesystem(url: str, options: Mapping[str, Any] | None = None):
    """The fsspec file system for ``url``, or one line naming the extra that brings it."""
    scheme = scheme_of(url)
    module, extra = BACKENDS.get(scheme, (None, None))
    if module is None:
        raise UpgdMigrateError(f"{url}: unknown URL scheme {scheme}:// (known: "
                               f"{', '.join(s + '://' for s in BACKENDS)})")
    try:
        __import__("fsspec")
        __import__(module)
    except ImportError:
        raise UpgdMigrateError(f"{url}: {scheme}:// needs {module}: pip install "
                               f"'upgd-migrate[{extra}]'") from None
    import fsspec

    kwargs = dict(options or {})
    if scheme in ("s3", "s3a"):
        kwargs = _s3_defaults(kwargs)
    fs = fsspec.filesystem(scheme, **kwargs)
    if scheme in ("s3", "s3a"):
        fs.retries = 2  # s3fs's own retry loop, on top of botocore's (a class attribute)
    return fs


def _s3_defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Bounded retries (a throttled or dead endpoint fails in seconds, not minutes), and
    ``endpoint_url`` where s3fs wants it."""
    if "endpoint_url" in kwargs:
        kwargs.setdefault("client_kwargs", {})["endpoint_url"] = kwargs.pop("endpoint_url")
    config = kwargs.setdefault("config_kwargs", {})
    config.setdefault("retries", {"max_attempts": 2, "mode": "standard"})
    config.setdefault("connect_timeout", 5)
    config.setdefault("read_timeout", 30)
    kwargs.setdefault("skip_instance_cache", True)
    return kwargs


# The server's codes for a key it does not know or a signature it cannot check, and botocore's
# exceptions for credentials it could not find: the credentials, not the permissions, are wrong.
BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                   "InvalidClientTokenId", "NoCredentialsError", "PartialCredentialsError"}
WHERE_CREDENTIALS = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or --storage-option key=... "
          "--storage-option secret=...",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS or --storage-option token=...",
    "hf": "HF_TOKEN or --storage-option token=..."}
# Answers of an endpoint that is overloaded or failing (botocore and s3fs retried them already).
BUSY = {"SlowDown", "ServiceUnavailable", "Throttling", "RequestTimeout", "InternalError",
        "500", "503"}
# botocore's and the standard library's names for an endpoint that never answered.
UNREACHABLE = {"ConnectionError", "ConnectionClosedError", "EndpointConnectionError",
               "ConnectTimeoutError", "ReadTimeoutError", "TimeoutError"}


def _server_error(e: BaseException) -> tuple[str | None, str]:
    """(code, message) the server sent, from ``e`` or the botocore error s3fs translated."""
    for err in (e, e.__cause__, e.__context__):
        found = (getattr(err, "response", None) or {}).get("Error") or {}
        if found.get("Code"):
            return str(found["Code"]), str(found.get("Message") or "")
    return None, ""


def describe(url: str, e: BaseException) -> str:
    """One line for a failed object-store call: what went wrong, without a traceback."""
    code, message = _server_error(e)
    name = type(e).__name__
    detail = " ".join(f"{code or name}: {message or e}".split()).rstrip(".")
    scheme = scheme_of(url)
    if code == "NoSuchBucket":
        text = "no such bucket"
    elif isinstance(e, FileNotFoundError) or code == "NoSuchKey":
        text = "no such object or bucket"
    elif code in BAD_CREDENTIALS or name in BAD_CREDENTIALS:
        where = WHERE_CREDENTIALS.get({"s3a": "s3", "gcs": "gs"}.get(scheme, scheme))
        text = (f"credentials refused ({detail}): check the credentials"
                + (f" ({where})" if where else ""))
    elif isinstance(e, PermissionError) or code in ("AccessDenied", "403", "AllAccessDisabled"):
        text = f"access denied ({detail}): check the credentials and the bucket's permissions"
    elif code in BUSY:
        text = f"{detail}: the endpoint is overloaded or failing; try again later"
    elif {c.__name__ for c in type(e).__mro__} & UNREACHABLE:
        where = str((getattr(e, "kwargs", None) or {}).get("endpoint_url") or "").split("?")[0]
        text = (f"no answer from the endpoint ({name}{' at ' + where if where else ''}): "
                "check endpoint_url and the network")
    elif code:
        text = detail
    else:
        text = " ".join(str(e).split()) or name
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{url}: {text}"


def _fetch(url: str, local: Path, options: Mapping[str, Any] | None, lazy: bool) -> None:
    from upgd_migrate.storage import zipranges

    fs = filesystem(url, options)
    try:
        if fs.isdir(url) and lazy:
            from upgd_migrate.storage import sparse

            local.mkdir(parents=True, exist_ok=True)
            sparse.stage(fs, url, local, lambda: filesystem(url, options))
        elif fs.isdir(url):
            fs.get(url.rstrip("/") + "/", str(local) + "/", recursive=True)
        elif not (lazy and zipranges.stage(fs, url, local, fs.size(url),
                                           lambda: filesystem(url, options))):
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(url, str(local))
    except UpgdMigrateError:
        raise
    except Exception as e:  # botocore, aiohttp, OSError: one line, whatever the backend
        raise UpgdMigrateError(describe(url, e)) from None
    if not local.exists():
        raise UpgdMigrateError(f"{url}: no such object or prefix")


@contextmanager
def staged(paths: Sequence[Any], options: Mapping[str, Any] | None = None, lazy: bool = False,
           ) -> Iterator[tuple[list[Any], dict[str, str]]]:
    """Local stand-ins for the URLs among ``paths`` (fetched into a private temp folder that is
    removed at the end; local paths pass through), and local path -> URL for the output.
    ``lazy``: DCP data objects and torch zips become sparse stand-ins read by range (for runs
    that never copy a stand-in: in place, or reading only)."""
    if not any(is_url(p) for p in paths):
        yield list(paths), {}
        return
    tmp = Path(tempfile.mkdtemp(prefix="upgd-migrate-"))
    try:
        out, names = [], {}
        for i, p in enumerate(paths):
            if not is_url(p):
                out.append(p)
                continue
            local = tmp / str(i) / (p.rstrip("/").rsplit("/", 1)[-1] or "root")
            _fetch(p, local, options, lazy)
            out.append(local)
            names[str(local)] = p.rstrip("/")
        yield out, names
    finally:
        forget_range_fetchers(str(tmp))
        shutil.rmtree(tmp, ignore_errors=True)


class _Shown(io.TextIOBase):
    """A text stream that shows each staged file under its URL, not its temp path."""

    def __init__(self, stream, names: Mapping[str, str]) -> None:
        self._stream, self._names = stream, sorted(names.items(), key=lambda kv: -len(kv[0]))

    def write(self, text: str) -> int:
        for local, url in self._names:
            text = text.replace(local, url)
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()


@contextmanager
def shown_as_urls(names: Mapping[str, str]) -> Iterator[None]:
    """stdout and stderr name URLs where the commands print staged paths."""
    if not names:
        yield
        return
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Shown(out, names), _Shown(err, names)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err


def _root(local: Path) -> Path:
    return local if local.is_dir() else local.parent


def _root_url(local: Path, url: str) -> str:
    return url if local.is_dir() else url.rsplit("/", 1)[0]


def migrate_urls(run, paths: Sequence[Any], output: Any, backup_suffix: str | None,
                 options: Mapping[str, Any] | None, shown: dict | None = None,
                 lazy: bool = False, within_store: bool = True) -> int:
    """``checkpoint`` with URLs among the inputs or as ``-o``: stage, ``run(paths, output)``
    on the local stand-ins, then push what it wrote (``-o URL``) or changed (in place).
    ``shown``, when given, receives local path -> URL (to rename paths in results).
    ``lazy``: stage DCP folders and torch zips sparsely; honoured in place (a backup is made of
    a filled stand-in) and with ``-o`` in the inputs' own store, where the store copies what is
    unchanged and a local copy keeps the stand-in's holes (elsewhere a copy would need every
    byte). ``within_store``: False sends every output file through this machine (the
    benchmark's "before")."""
    from upgd_migrate.storage import mirror

    if is_url(output):
        mirror.check_output(paths, output)
    within = within_store and mirror.same_store(paths, output)
    lazy = lazy and (output is None or within)
    with staged(paths, options, lazy) as (local, names), holes_kept(within):
        sources = dict(names) if within else {}
        out_local, before = output, {}
        with tempfile.TemporaryDirectory(prefix="upgd-migrate-out-") as tmp:
            if is_url(output):
                out_local = Path(tmp) / (output.rstrip("/").rsplit("/", 1)[-1] or "out")
                names = {**names, str(out_local): output.rstrip("/")}
            elif output is None:  # a staged object sits alone in its folder: push the folder
                from upgd_migrate.storage.write import snapshot

                roots = {str(_root(Path(p))): _root_url(Path(p), url) for p, url in names.items()}
                before = {p: snapshot(Path(p)) for p in roots}
            if shown is not None:
                shown.update(names)
            with shown_as_urls(names):
                code = run(local, out_local)
                if code == 2 or code >= 128:
                    return code  # nothing is pushed from a run that failed
                # The local writes committed only the stand-ins: the upload is what publishes
                # the result, so a signal from here on aborts it (and one held since the last
                # local write interrupts before anything is sent).
                errors.resume_interrupts()
                from upgd_migrate.storage.write import push_changes

                if is_url(output) and out_local.exists():
                    mirror.push_output(out_local, output.rstrip("/"), sources, options)
                for p, url in roots.items() if output is None else ():
                    push_changes(Path(p), url, before[p], options, backup_suffix or None)
                errors.note_commit()  # pushed: a signal now no longer reports "interrupted"
    return code


def renamed(value: Any, names: Mapping[str, str]) -> Any:
    """``value`` (a result of builtins) with each staged path shown as its URL."""
    if isinstance(value, str):
        for local, url in sorted(names.items(), key=lambda kv: -len(kv[0])):
            value = value.replace(local, url)
        return value
    if isinstance(value, dict):
        return {k: renamed(v, names) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(renamed(v, names) for v in value)
    return value
