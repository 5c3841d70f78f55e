"""The content-addressed code store: storing, reusing, deleting and, above all, safely extracting zips."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from faas.errors import InvalidParameterValueException, RequestEntityTooLargeException
from faas.store.code import UNZIP_FAILED, CodePackage, CodeStore

# -- building zips in memory --------------------------------------------------------------------------------

FILE = stat.S_IFREG
LINK = stat.S_IFLNK
DIR = stat.S_IFDIR


def member(name: str, mode: int | None = FILE | 0o644, *, system: int = 3) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    info.create_system = system
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0 if mode is None else mode << 16
    if mode is not None and stat.S_ISDIR(mode):
        info.external_attr |= 0x10  # MS-DOS directory flag, as real tools set it
    return info


def make_zip(*members: tuple[zipfile.ZipInfo | str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, content in members:
            zf.writestr(info if isinstance(info, zipfile.ZipInfo) else member(info), content)
    return buf.getvalue()


def infos(data: bytes) -> list[zipfile.ZipInfo]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return zf.infolist()


def set_declared_size(data: bytes, size: int) -> bytes:
    """Rewrite the uncompressed size of the single member in both its local header and the central directory."""
    out = bytearray(data)
    assert out[:4] == b"PK\x03\x04"
    struct.pack_into("<I", out, 22, size)
    eocd = out.rindex(b"PK\x05\x06")
    (cd_offset,) = struct.unpack_from("<I", out, eocd + 16)
    assert out[cd_offset : cd_offset + 4] == b"PK\x01\x02"
    struct.pack_into("<I", out, cd_offset + 24, size)
    return bytes(out)


HELLO = make_zip(
    ("lambda_function.py", "def handler(event, context):\n    return event\n"),
    (member("bootstrap", FILE | 0o755), "#!/bin/sh\necho hi\n"),
    (member("lib/", DIR | 0o755), b""),
    ("lib/pkg/util.py", "X = 1\n"),  # implicit parent lib/pkg
)


@pytest.fixture
def store(tmp_path: Path) -> CodeStore:
    return CodeStore(tmp_path / "code")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def assert_nothing_left(store: CodeStore, data: bytes) -> None:
    digest = hashlib.sha256(data).hexdigest()
    assert not store.tree(digest).exists()
    assert not store.zip_path(digest).exists()
    assert not store.has(digest)
    assert list((store.root / "tmp").iterdir()) == []
    assert list((store.root / "trees").iterdir()) == []


async def assert_rejected(store: CodeStore, data: bytes, message: str | None = None) -> str:
    with pytest.raises(InvalidParameterValueException) as info:
        await store.put(data)
    if message is not None:
        assert info.value.message == message
    assert_nothing_left(store, data)
    return info.value.message or ""


# -- storing -------------------------------------------------------------------------------------------------


async def test_round_trip_and_digests(store: CodeStore) -> None:
    pkg = await store.put(HELLO)
    digest = hashlib.sha256(HELLO).digest()
    assert pkg == CodePackage(digest.hex(), len(HELLO), pkg.unzipped_size)
    assert pkg.sha256_b64 == base64.b64encode(digest).decode()
    assert len(pkg.sha256_b64) == 44

    assert store.has(pkg.sha256)
    assert store.zip_path(pkg.sha256) == store.root / "zips" / f"{pkg.sha256}.zip"
    assert store.zip_path(pkg.sha256).read_bytes() == HELLO
    tree = store.tree(pkg.sha256)
    assert tree == store.root / "trees" / pkg.sha256
    assert (tree / "lambda_function.py").read_text() == "def handler(event, context):\n    return event\n"
    assert (tree / "lib" / "pkg" / "util.py").read_text() == "X = 1\n"
    assert pkg.unzipped_size == sum(i.file_size for i in infos(HELLO))
    assert list((store.root / "tmp").iterdir()) == []


async def test_permissions(store: CodeStore) -> None:
    data = make_zip(
        (member("bootstrap", FILE | 0o755), "#!/bin/sh\n"),
        (member("only_owner_exec", FILE | 0o700), "x"),
        (member("plain.txt", FILE | 0o600), "x"),
        (member("world_writable", FILE | 0o666), "x"),
        (member("d/", DIR | 0o700), b""),
        (member("windows.txt", None, system=0), "x"),  # made on Windows: no unix mode at all
        (member("e/f/g.txt"), "x"),
    )
    tree = store.tree((await store.put(data)).sha256)
    assert mode_of(tree) == 0o755
    assert mode_of(tree / "bootstrap") == 0o755
    assert os.access(tree / "bootstrap", os.X_OK)
    assert mode_of(tree / "only_owner_exec") == 0o755
    assert mode_of(tree / "plain.txt") == 0o644
    assert mode_of(tree / "world_writable") == 0o644
    assert mode_of(tree / "d") == 0o755
    assert mode_of(tree / "windows.txt") == 0o644
    assert mode_of(tree / "e") == mode_of(tree / "e" / "f") == 0o755
    assert (tree / "windows.txt").read_text() == "x"


async def test_put_is_idempotent(store: CodeStore) -> None:
    first = await store.put(HELLO)
    inode = store.tree(first.sha256).stat().st_ino
    second = await store.put(HELLO)
    assert second == first
    assert store.tree(first.sha256).stat().st_ino == inode  # reused, not extracted again
    assert len(list((store.root / "zips").iterdir())) == 1


async def test_put_repairs_a_missing_zip(store: CodeStore) -> None:
    pkg = await store.put(HELLO)
    store.zip_path(pkg.sha256).unlink()
    assert not store.has(pkg.sha256)
    assert await store.put(HELLO) == pkg
    assert store.zip_path(pkg.sha256).read_bytes() == HELLO


async def test_concurrent_puts_of_the_same_bytes(store: CodeStore) -> None:
    results = await asyncio.gather(*(store.put(HELLO) for _ in range(8)))
    assert len(set(results)) == 1
    pkg = results[0]
    assert store.has(pkg.sha256)
    assert (store.tree(pkg.sha256) / "bootstrap").read_text() == "#!/bin/sh\necho hi\n"
    assert list((store.root / "tmp").iterdir()) == []
    assert [p.name for p in (store.root / "trees").iterdir()] == [pkg.sha256]


async def test_concurrent_puts_with_separate_stores_on_one_root(tmp_path: Path) -> None:
    # No shared lock: the temp names and the rename must keep them apart on their own.
    stores = [CodeStore(tmp_path / "code") for _ in range(4)]
    results = await asyncio.gather(*(s.put(HELLO) for s in stores))
    assert len(set(results)) == 1
    assert stores[0].has(results[0].sha256)
    assert list((tmp_path / "code" / "tmp").iterdir()) == []


async def test_different_packages_side_by_side(store: CodeStore) -> None:
    a = await store.put(make_zip(("a.py", "a")))
    b = await store.put(make_zip(("b.py", "b")))
    assert a.sha256 != b.sha256
    assert (store.tree(a.sha256) / "a.py").read_text() == "a"
    assert (store.tree(b.sha256) / "b.py").read_text() == "b"


async def test_empty_zip(store: CodeStore) -> None:
    pkg = await store.put(make_zip())
    assert pkg.unzipped_size == 0
    assert list(store.tree(pkg.sha256).iterdir()) == []


async def test_delete(store: CodeStore) -> None:
    keep = await store.put(make_zip(("keep.py", "k")))
    pkg = await store.put(HELLO)
    await store.delete(pkg.sha256)
    assert not store.has(pkg.sha256)
    assert not store.tree(pkg.sha256).exists()
    assert not store.zip_path(pkg.sha256).exists()
    assert list((store.root / "tmp").iterdir()) == []
    assert store.has(keep.sha256)
    await store.delete(pkg.sha256)  # already gone: fine
    await store.delete("0" * 64)  # never stored: fine
    assert await store.put(HELLO) == pkg  # and it can come back
    assert store.has(pkg.sha256)


async def test_delete_with_only_half_a_package(store: CodeStore) -> None:
    pkg = await store.put(HELLO)
    store.zip_path(pkg.sha256).unlink()
    await store.delete(pkg.sha256)
    assert not store.tree(pkg.sha256).exists()


def test_malformed_digests(store: CodeStore) -> None:
    assert not store.has("../../etc")
    assert not store.has("")
    with pytest.raises(ValueError):
        store.tree("../x")
    with pytest.raises(ValueError):
        store.zip_path("abc")


def test_stale_temp_entries_are_cleaned(tmp_path: Path) -> None:
    root = tmp_path / "code"
    CodeStore(root)
    (root / "tmp" / "dead.extract").mkdir()
    (root / "tmp" / "dead.extract" / "half.py").write_text("x")
    (root / "tmp" / "dead.zip").write_bytes(b"PK")
    CodeStore(root)
    assert list((root / "tmp").iterdir()) == []


async def test_failure_mid_extraction_leaves_nothing(store: CodeStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import faas.store.code as code

    calls = 0
    real = code._write_file

    def crash_on_second(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(code, "_write_file", crash_on_second)
    with pytest.raises(OSError):
        await store.put(HELLO)
    assert_nothing_left(store, HELLO)


# -- symlinks ------------------------------------------------------------------------------------------------


async def test_symlinks_inside_are_kept(store: CodeStore) -> None:
    data = make_zip(
        ("lib/real.py", "R = 1\n"),
        (member("alias.py", LINK | 0o777), "lib/real.py"),
        (member("lib/up", LINK | 0o777), ".."),  # the root itself
        (member("libdir", LINK | 0o777), "lib"),
        (member("dangling", LINK | 0o777), "not/there"),
    )
    pkg = await store.put(data)
    tree = store.tree(pkg.sha256)
    assert (tree / "alias.py").is_symlink()
    assert os.readlink(tree / "alias.py") == "lib/real.py"
    assert (tree / "alias.py").read_text() == "R = 1\n"
    assert (tree / "libdir" / "real.py").read_text() == "R = 1\n"
    assert (tree / "lib" / "up").resolve() == tree.resolve()
    assert (tree / "dangling").is_symlink()
    # Counted as the length of each target, as after a reuse (lstat size of a symlink).
    assert pkg.unzipped_size == len("R = 1\n") + len("lib/real.py") + 2 + 3 + len("not/there")
    assert (await store.put(data)).unzipped_size == pkg.unzipped_size


@pytest.mark.parametrize(
    "name, target",
    [
        ("evil", "/etc/passwd"),
        ("evil", ".."),
        ("evil", "../outside"),
        ("a/b/evil", "../../../x"),
        ("evil", "a/../../x"),
        ("evil", "C:/Windows"),
    ],
)
async def test_symlinks_escaping_are_rejected(store: CodeStore, name: str, target: str) -> None:
    data = make_zip(("ok.py", "x"), (member(name, LINK | 0o777), target))
    message = await assert_rejected(store, data)
    assert message == f"Could not unzip uploaded file: entry '{name}' points outside the package."


async def test_symlink_chain_escaping_is_rejected(store: CodeStore) -> None:
    # Each link is inside on its own; together t -> a/b/c/.. -> (../..)/.. lands above the root.
    data = make_zip(
        (member("a/b/c", LINK | 0o777), "../.."),
        (member("t", LINK | 0o777), "a/b/c/.."),
    )
    message = await assert_rejected(store, data)
    assert message == "Could not unzip uploaded file: entry 't' points outside the package."


async def test_no_write_through_a_symlink(store: CodeStore, tmp_path: Path) -> None:
    # A link named like a directory that a later entry writes into: refused, and nothing outside is touched.
    outside = tmp_path / "outside"
    outside.mkdir()
    data = make_zip(
        (member("sub", LINK | 0o777), str(outside)),
        ("sub/x.py", "x"),
    )
    await assert_rejected(store, data)
    assert list(outside.iterdir()) == []


@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")
async def test_duplicate_names_last_one_wins(store: CodeStore) -> None:
    data = make_zip(("f.py", "first"), (member("f.py", FILE | 0o755), "second"), ("f.py", "third!"))
    pkg = await store.put(data)
    assert (store.tree(pkg.sha256) / "f.py").read_text() == "third!"
    assert mode_of(store.tree(pkg.sha256) / "f.py") == 0o644
    assert pkg.unzipped_size == len("third!")


# -- rejected names ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../x", "a/../../x", "a/../x", "/etc/x", "C:/x", "c:x", "..\\x", "a\\..\\..\\x", "\\\\server\\share\\x"],
)
async def test_unsafe_names_are_rejected(store: CodeStore, name: str) -> None:
    data = make_zip(("ok.py", "x"), (member(name), "boom"))
    message = await assert_rejected(store, data)
    assert message == f"Could not unzip uploaded file: entry '{name}' points outside the package."


async def test_dot_components_are_harmless(store: CodeStore) -> None:
    pkg = await store.put(make_zip(("./a/./b.py", "b"), ("c//d.py", "d"), (member("./", DIR | 0o755), b"")))
    tree = store.tree(pkg.sha256)
    assert (tree / "a" / "b.py").read_text() == "b"
    assert (tree / "c" / "d.py").read_text() == "d"


async def test_file_and_directory_conflict_is_rejected(store: CodeStore) -> None:
    data = make_zip(("a", "file"), ("a/b.py", "x"))
    message = await assert_rejected(store, data)
    assert "entry 'a'" in message


# -- broken zips ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"not a zip at all", b"PK\x03\x04" + b"\x00" * 100, os.urandom(4096)])
async def test_not_a_zip(store: CodeStore, data: bytes) -> None:
    await assert_rejected(store, data, UNZIP_FAILED)


async def test_truncated_zip(store: CodeStore) -> None:
    await assert_rejected(store, HELLO[: len(HELLO) // 2], UNZIP_FAILED)
    await assert_rejected(store, HELLO[:-10], UNZIP_FAILED)


async def test_crc_error(store: CodeStore) -> None:
    data = bytearray(make_zip((member("f.txt"), "hello world, hello world")))
    (info,) = infos(bytes(data))
    struct.pack_into("<I", data, 14, info.CRC ^ 1)  # local header
    eocd = data.rindex(b"PK\x05\x06")
    (cd,) = struct.unpack_from("<I", data, eocd + 16)
    struct.pack_into("<I", data, cd + 16, info.CRC ^ 1)  # central directory
    await assert_rejected(store, bytes(data), UNZIP_FAILED)


async def test_corrupt_compressed_data(store: CodeStore) -> None:
    data = bytearray(make_zip((member("f.txt"), os.urandom(2000))))
    header_len = 30 + len("f.txt")
    for i in range(header_len, header_len + 200):
        data[i] ^= 0x5A
    await assert_rejected(store, bytes(data), UNZIP_FAILED)


async def test_unsupported_compression_is_rejected(store: CodeStore) -> None:
    info = member("f.txt")
    info.compress_type = zipfile.ZIP_BZIP2
    await assert_rejected(store, make_zip((info, "x" * 1000)), UNZIP_FAILED)


# -- limits --------------------------------------------------------------------------------------------------


async def test_zipped_size_limit(tmp_path: Path) -> None:
    store = CodeStore(tmp_path / "code", max_zipped=len(HELLO) - 1)
    with pytest.raises(RequestEntityTooLargeException) as info:
        await store.put(HELLO)
    assert info.value.message == f"Zipped size must be smaller than {len(HELLO) - 1} bytes"
    assert_nothing_left(store, HELLO)
    assert await CodeStore(tmp_path / "code2", max_zipped=len(HELLO)).put(HELLO)


async def test_zip_bomb(tmp_path: Path) -> None:
    limit = 1 << 20
    store = CodeStore(tmp_path / "code", max_unzipped=limit)
    bomb = make_zip(("small.py", "x"), ("zeros.bin", bytes(8 << 20)))
    assert len(bomb) < 20_000
    await assert_rejected(store, bomb, f"Unzipped size must be smaller than {limit} bytes")


async def test_unzipped_limit_counts_all_members(tmp_path: Path) -> None:
    limit = 1000
    store = CodeStore(tmp_path / "code", max_unzipped=limit)
    at_limit = make_zip(("a", b"a" * 500), ("b", b"b" * 500))
    assert (await store.put(at_limit)).unzipped_size == limit
    over = make_zip(("a", b"a" * 500), ("b", b"b" * 501))
    with pytest.raises(InvalidParameterValueException, match="Unzipped size must be smaller than 1000 bytes"):
        await store.put(over)
    assert not store.tree(hashlib.sha256(over).hexdigest()).exists()


async def test_header_claiming_a_small_size_does_not_help_a_bomb(tmp_path: Path) -> None:
    limit = 1 << 20
    store = CodeStore(tmp_path / "code", max_unzipped=limit)
    liar = set_declared_size(make_zip(("zeros.bin", bytes(8 << 20))), 100)
    assert infos(liar)[0].file_size == 100
    await assert_rejected(store, liar)


async def test_header_claiming_a_huge_size_counts_real_bytes(tmp_path: Path) -> None:
    # The declared size is ignored for the limit: what counts is what is actually written.
    store = CodeStore(tmp_path / "code", max_unzipped=1000)
    liar = set_declared_size(make_zip(("f.txt", "hello")), 50_000_000)
    pkg = await store.put(liar)
    assert pkg.unzipped_size == 5
    assert (store.tree(pkg.sha256) / "f.txt").read_text() == "hello"


async def test_entry_count_limit(tmp_path: Path) -> None:
    store = CodeStore(tmp_path / "code", max_entries=3)
    data = make_zip(*((f"f{i}.py", "x") for i in range(4)))
    message = await assert_rejected(store, data)
    assert "entries" in message
    assert await store.put(make_zip(*((f"f{i}.py", "x") for i in range(3))))
