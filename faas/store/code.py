"""Deployment packages: ZIP files stored by the sha256 of their bytes, and extracted safely next to them.

Layout under the store root::

    zips/<hex>.zip     the package exactly as uploaded
    trees/<hex>/       its extracted contents, what a runtime mounts or reads
    tmp/               work area; anything here is disposable and is wiped when a store opens

Both final paths only ever appear through an atomic rename (`os.replace` for the zip, `os.rename` of a fully
extracted temporary directory for the tree), so a crash never leaves a half-written package where a reader could
find it. A package counts as present when both its zip and its tree exist.

Extraction trusts nothing in the archive:

* member names are checked for absolute paths, drive letters and `..` components before anything is written;
* sizes declared in the headers are ignored for the limit: the bytes actually produced while streaming each
  member are counted, and extraction stops as soon as the total passes `max_unzipped`;
* the number of entries is capped;
* only the stored and deflate methods are accepted (the decompressors Python uses for bzip2 and lzma inflate a
  whole input chunk at once, so a tiny chunk can expand into gigabytes before any count is possible);
* regular files are written with O_NOFOLLOW | O_EXCL, and symlinks are only created after every regular file and
  directory exists, so no write ever passes through a symlink taken from the archive;
* each symlink must stay inside the tree: its target is checked lexically when it is read, and once all links
  exist every one is resolved for real, which catches chains of individually harmless links that escape together.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

import msgspec

from faas.errors import InvalidParameterValueException, RequestEntityTooLargeException

__all__ = ["CodePackage", "CodeStore", "MAX_ENTRIES"]

MAX_ZIPPED = 52_428_800  # 50 MiB, the Lambda limit for a direct upload
MAX_UNZIPPED = 262_144_000  # 250 MiB, the Lambda limit for the extracted package
MAX_ENTRIES = 100_000

UNZIP_FAILED = "Could not unzip uploaded file. Please check your file, then try to upload again."

_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_DRIVE = re.compile(r"[A-Za-z]:")
_CHUNK = 64 * 1024
_MAX_LINK_TARGET = 4095  # PATH_MAX minus the terminating NUL
_MAX_NAME_COMPONENT = 255  # NAME_MAX on common file systems
_SUPPORTED_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


class CodePackage(msgspec.Struct, frozen=True):
    """A stored deployment package."""

    sha256: str  # hex digest of the zip bytes
    size: int  # zipped size in bytes
    unzipped_size: int  # bytes of regular files plus symlink targets in the extracted tree

    @property
    def sha256_b64(self) -> str:
        """The digest as AWS reports `CodeSha256`: base64 of the raw 32 bytes."""
        return base64.b64encode(bytes.fromhex(self.sha256)).decode("ascii")


class CodeStore:
    """Content-addressed storage for deployment packages; see the module docstring for the guarantees."""

    def __init__(
        self,
        root: Path,
        *,
        max_zipped: int = MAX_ZIPPED,
        max_unzipped: int = MAX_UNZIPPED,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.root = Path(root)
        self.max_zipped = max_zipped
        self.max_unzipped = max_unzipped
        self.max_entries = max_entries
        self._zips = self.root / "zips"
        self._trees = self.root / "trees"
        self._tmp = self.root / "tmp"
        for d in (self._zips, self._trees, self._tmp):
            d.mkdir(parents=True, exist_ok=True)
        # Whatever is in tmp/ was left by a process that died mid-put or mid-delete: none of it is referenced.
        for entry in self._tmp.iterdir():
            _remove(entry)
        # One lock per digest, so concurrent puts (and deletes) of the same package in this process take turns.
        # Cross-process safety does not depend on it: every writer works in its own temporary names.
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    # -- paths ---------------------------------------------------------------------------------------------

    def tree(self, sha256: str) -> Path:
        """The extracted directory of a package (which may not exist)."""
        return self._trees / _check_digest(sha256)

    def zip_path(self, sha256: str) -> Path:
        """The stored zip of a package (which may not exist)."""
        return self._zips / f"{_check_digest(sha256)}.zip"

    def has(self, sha256: str) -> bool:
        """Whether a complete package (zip and tree) is stored. A malformed digest is simply not stored."""
        if not isinstance(sha256, str) or not _HEX_DIGEST.fullmatch(sha256.lower()):
            return False
        return self.zip_path(sha256).is_file() and self.tree(sha256).is_dir()

    # -- operations ----------------------------------------------------------------------------------------

    async def put(self, data: bytes) -> CodePackage:
        """Validate, store and extract a zip, or reuse the stored copy of the same bytes."""
        if len(data) > self.max_zipped:
            raise RequestEntityTooLargeException(f"Zipped size must be smaller than {self.max_zipped} bytes")
        digest = await asyncio.to_thread(_sha256_hex, data)
        async with self._lock(digest):
            return await asyncio.to_thread(self._put_sync, data, digest)

    async def delete(self, sha256: str) -> None:
        """Remove a package's zip and tree. Deleting a package that is not (or only partly) stored is fine."""
        digest = _check_digest(sha256)
        async with self._lock(digest):
            await asyncio.to_thread(self._delete_sync, digest)

    # -- implementation ------------------------------------------------------------------------------------

    def _lock(self, digest: str) -> _DigestLock:
        return _DigestLock(self._locks, digest)

    def _put_sync(self, data: bytes, digest: str) -> CodePackage:
        tree = self.tree(digest)
        zip_path = self.zip_path(digest)

        if tree.is_dir():
            # Same digest, same bytes: the tree was validated and extracted by an earlier put.
            if not zip_path.is_file():
                self._write_zip(data, zip_path)
            return CodePackage(digest, len(data), _tree_size(tree))

        work = Path(tempfile.mkdtemp(prefix=f"{digest}.", suffix=".extract", dir=self._tmp))
        try:
            unzipped = _extract(data, work, self.max_unzipped, self.max_entries)
            os.chmod(work, 0o755)  # mkdtemp makes it 0o700
            self._write_zip(data, zip_path)
            try:
                os.rename(work, tree)
            except OSError:
                # Another writer (another process on the same root) renamed an identical tree first.
                if not tree.is_dir():
                    raise
                _remove(work)
        except BaseException:
            _remove(work)
            raise
        return CodePackage(digest, len(data), unzipped)

    def _write_zip(self, data: bytes, dest: Path) -> None:
        fd, tmp_name = tempfile.mkstemp(prefix=f"{dest.stem}.", suffix=".zip", dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, dest)
        except BaseException:
            _remove(Path(tmp_name))
            raise

    def _delete_sync(self, digest: str) -> None:
        self.zip_path(digest).unlink(missing_ok=True)
        tree = self.tree(digest)
        # Move the tree out of its final path in one step, then remove it at leisure: readers never see half.
        graveyard = Path(tempfile.mkdtemp(prefix=f"{digest}.", suffix=".delete", dir=self._tmp))
        try:
            os.rename(tree, graveyard / "tree")
        except FileNotFoundError:
            pass
        finally:
            _remove(graveyard)


class _DigestLock:
    """An asyncio lock per key, dropped from the table when nobody holds or waits for it."""

    def __init__(self, table: dict[str, tuple[asyncio.Lock, int]], key: str) -> None:
        self._table = table
        self._key = key

    async def __aenter__(self) -> None:
        lock, users = self._table.get(self._key) or (asyncio.Lock(), 0)
        self._table[self._key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._release_user()
            raise

    async def __aexit__(self, *exc: object) -> None:
        lock, _ = self._table[self._key]
        lock.release()
        self._release_user()

    def _release_user(self) -> None:
        lock, users = self._table[self._key]
        if users <= 1:
            del self._table[self._key]
        else:
            self._table[self._key] = (lock, users - 1)


# -- extraction ----------------------------------------------------------------------------------------------


class _Entry:
    __slots__ = ("info", "parts", "kind", "mode")

    def __init__(self, info: zipfile.ZipInfo, parts: tuple[str, ...], kind: str, mode: int) -> None:
        self.info = info
        self.parts = parts  # path components relative to the tree root
        self.kind = kind  # "dir", "file" or "link"
        self.mode = mode  # permission bits to give a dir or file

    @property
    def relpath(self) -> str:
        return "/".join(self.parts)


def _extract(data: bytes, dest: Path, max_unzipped: int, max_entries: int) -> int:
    """Extract `data` into the empty directory `dest`; return the unzipped size. Raises on anything unsafe."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except Exception as e:  # BadZipFile, but also struct/EOF/value errors from a mangled central directory
        raise InvalidParameterValueException(UNZIP_FAILED) from e
    with zf:
        infos = zf.infolist()
        if len(infos) > max_entries:
            raise InvalidParameterValueException(
                f"Could not unzip uploaded file: the package has {len(infos)} entries, more than {max_entries}."
            )
        entries = _plan(infos)
        budget = _Budget(max_unzipped)

        # Directories first (explicit entries and every implied parent), then regular files, then symlinks:
        # no symlink exists while anything is written, so nothing is written through one.
        dirs: dict[tuple[str, ...], int] = {}
        for entry in entries.values():
            for i in range(1, len(entry.parts)):
                dirs.setdefault(entry.parts[:i], 0o755)
            if entry.kind == "dir":
                dirs[entry.parts] = 0o755
        for parts in sorted(dirs, key=len):
            if parts in entries and entries[parts].kind != "dir":
                raise _conflict(entries[parts].info)
            os.mkdir(dest.joinpath(*parts), 0o755)
            os.chmod(dest.joinpath(*parts), 0o755)  # mkdir's mode is filtered by the umask

        for entry in entries.values():
            if entry.kind == "file":
                _write_file(zf, entry, dest, budget)

        links: list[tuple[_Entry, Path]] = []
        for entry in entries.values():
            if entry.kind == "link":
                target = _read_link_target(zf, entry, budget)
                path = dest.joinpath(*entry.parts)
                os.symlink(target, path)
                links.append((entry, path))

        # Each target was checked on its own; resolve them all now that every link exists, to catch chains
        # (a/b/c -> ../.. and t -> a/b/c/.. are each inside, but t resolves above the root).
        root = os.path.realpath(dest)
        for entry, path in links:
            resolved = os.path.realpath(path)
            if resolved != root and not resolved.startswith(root + os.sep):
                raise _outside(entry)
        return budget.used


def _plan(infos: list[zipfile.ZipInfo]) -> dict[tuple[str, ...], _Entry]:
    """Validate every name and classify every entry; a later entry of the same path replaces an earlier one."""
    entries: dict[tuple[str, ...], _Entry] = {}
    for info in infos:
        parts = _safe_parts(info)
        if not parts:
            continue  # the archive root itself, e.g. "./"
        mode = info.external_attr >> 16  # unix st_mode when the archive was made on a unix host, else 0
        if info.filename.endswith(("/", "\\")) or stat.S_ISDIR(mode):
            kind, perm = "dir", 0o755
        elif stat.S_ISLNK(mode):
            kind, perm = "link", 0o777
        else:
            kind, perm = "file", (0o755 if mode & 0o111 else 0o644)
        if kind != "dir" and info.compress_type not in _SUPPORTED_METHODS:
            raise InvalidParameterValueException(UNZIP_FAILED)
        previous = entries.get(parts)
        if previous is not None and (previous.kind == "dir") != (kind == "dir"):
            raise _conflict(info)
        entries.pop(parts, None)  # re-insert so the order of writing follows the last occurrence
        entries[parts] = _Entry(info, parts, kind, perm)
    return entries


def _safe_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    # Backslashes are separators in archives made on Windows; treating them so everywhere keeps `..\x` out.
    name = info.filename.replace("\\", "/")
    if "\x00" in name or name.startswith("/") or _DRIVE.match(name):
        raise _outside(info)
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _outside(info)
    for p in parts:
        if len(os.fsencode(p)) > _MAX_NAME_COMPONENT:
            raise InvalidParameterValueException(
                f"Could not unzip uploaded file: entry '{info.filename}' has a name that is too long."
            )
    return parts


class _Budget:
    """Counts the unzipped bytes actually produced, against the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise InvalidParameterValueException(f"Unzipped size must be smaller than {self.limit} bytes")


def _read_chunks(zf: zipfile.ZipFile, entry: _Entry, chunk: int = _CHUNK):
    """Yield the decompressed bytes of a member; any failure to decode it is the client's broken zip."""
    try:
        with zf.open(entry.info) as src:
            while True:
                block = src.read(chunk)
                if not block:
                    return
                yield block
    except GeneratorExit:
        raise
    except Exception as e:  # BadZipFile (CRC, bad local header), zlib.error, EOFError, encrypted, ...
        raise InvalidParameterValueException(UNZIP_FAILED) from e


def _write_file(zf: zipfile.ZipFile, entry: _Entry, dest: Path, budget: _Budget) -> None:
    path = dest.joinpath(*entry.parts)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    with os.fdopen(fd, "wb") as out:
        chunks = _read_chunks(zf, entry)
        try:
            for block in chunks:
                budget.take(len(block))  # before writing: stop the moment the limit is passed
                out.write(block)
        finally:
            chunks.close()
        os.fchmod(out.fileno(), entry.mode)


def _read_link_target(zf: zipfile.ZipFile, entry: _Entry, budget: _Budget) -> str:
    raw = bytearray()
    chunks = _read_chunks(zf, entry, _MAX_LINK_TARGET + 1)
    try:
        for block in chunks:
            budget.take(len(block))
            raw += block
            if len(raw) > _MAX_LINK_TARGET:
                raise InvalidParameterValueException(
                    f"Could not unzip uploaded file: entry '{entry.info.filename}' is a symlink with a target "
                    "that is too long."
                )
    finally:
        chunks.close()
    if not raw or b"\x00" in raw:
        raise InvalidParameterValueException(
            f"Could not unzip uploaded file: entry '{entry.info.filename}' is a symlink with an invalid target."
        )
    target = os.fsdecode(bytes(raw))
    # Lexical check: an absolute target, or one climbing above the root from the link's own directory.
    # (The real resolution, through other links, is checked once all of them exist.)
    if target.startswith("/") or _DRIVE.match(target):
        raise _outside(entry.info)
    depth = len(entry.parts) - 1  # directories between the root and the link
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                raise _outside(entry.info)
        elif part not in ("", "."):
            depth += 1
    return target


def _conflict(info: zipfile.ZipInfo) -> InvalidParameterValueException:
    return InvalidParameterValueException(
        f"Could not unzip uploaded file: entry '{info.filename}' is both a directory and a file or symlink."
    )


def _outside(info: zipfile.ZipInfo | _Entry) -> InvalidParameterValueException:
    name = info.info.filename if isinstance(info, _Entry) else info.filename
    return InvalidParameterValueException(f"Could not unzip uploaded file: entry '{name}' points outside the package.")


# -- helpers -------------------------------------------------------------------------------------------------


def _check_digest(sha256: str) -> str:
    digest = sha256.lower() if isinstance(sha256, str) else ""
    if not _HEX_DIGEST.fullmatch(digest):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return digest


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tree_size(tree: Path) -> int:
    """Bytes of regular files plus symlink targets (a symlink's lstat size is its target's length)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                total += st.st_size
    return total


def _remove(path: Path) -> None:
    """Remove a file, symlink or directory tree; already gone is fine."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
