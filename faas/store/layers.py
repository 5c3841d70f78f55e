"""Layers: published layer versions and their permission policies in SQLite, and the merged /opt directory a
function's layers make.

A layer's content is an ordinary package in the `CodeStore` (the same content-addressed zips and trees that
functions use), referenced from `layer_versions.code_sha256`. Version numbers come from a per-layer counter in
`layers`, whose row is never deleted, so numbers are not reused.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import msgspec

from faas.errors import PreconditionFailedException, ResourceConflictException, ResourceNotFoundException
from faas.store.code import CodePackage, CodeStore
from faas.store.db import Database

__all__ = [
    "LayerRef", "LayerVersion", "Layers", "PolicyStatement", "LAYER_REVISION_MISMATCH", "NO_POLICY",
    "assemble_opt", "opt_key", "package_in_use",
]

log = logging.getLogger(__name__)

LAYER_REVISION_MISMATCH = (
    "The Revision Id provided does not match the latest Revision Id. "
    "Call the GetLayerPolicy API to retrieve the latest Revision Id"
)
NO_POLICY = "No policy is associated with the given resource."


class LayerRef(msgspec.Struct, frozen=True):
    """One entry of a function's `Layers`: the layer version ARN, its zip size and its code digest (hex)."""

    arn: str
    code_size: int
    sha256: str


class PolicyStatement(msgspec.Struct, frozen=True):
    """One AddLayerVersionPermission grant, as given (rendered into a policy document by the API)."""

    sid: str
    action: str
    principal: str
    organization_id: str | None = None


class LayerVersion(msgspec.Struct, frozen=True):
    layer_name: str
    version: int
    code_sha256: str  # hex digest of the zip
    code_size: int
    created_date: str  # 2024-01-01T12:00:00.000+0000
    description: str = ""
    license_info: str | None = None
    # None: not sent (AWS omits the key); []: sent empty (AWS echoes it).
    compatible_runtimes: list[str] | None = None
    compatible_architectures: list[str] | None = None
    # No policy: an empty list and no revision id.
    policy: list[PolicyStatement] = msgspec.field(default_factory=list)
    policy_revision_id: str | None = None


_list_decoder = msgspec.json.Decoder(list[str])
_policy_decoder = msgspec.json.Decoder(list[PolicyStatement])
_encoder = msgspec.json.Encoder()

_SELECT = (
    "SELECT lv.layer_name, lv.version, lv.description, lv.license_info, lv.compatible_runtimes,"
    " lv.compatible_architectures, lv.code_sha256, lv.created_date, lv.policy, lv.policy_revision_id,"
    " p.size AS code_size"
    " FROM layer_versions lv JOIN code_packages p ON p.sha256 = lv.code_sha256"
)


def _json_list(value: list[str] | None) -> str | None:
    return None if value is None else _encoder.encode(list(value)).decode()


def _from_row(row) -> LayerVersion:
    return LayerVersion(
        layer_name=row["layer_name"],
        version=int(row["version"]),
        code_sha256=row["code_sha256"],
        code_size=int(row["code_size"]),
        created_date=row["created_date"],
        description=row["description"],
        license_info=row["license_info"],
        compatible_runtimes=(
            None if row["compatible_runtimes"] is None else _list_decoder.decode(row["compatible_runtimes"])
        ),
        compatible_architectures=(
            None if row["compatible_architectures"] is None else _list_decoder.decode(row["compatible_architectures"])
        ),
        policy=[] if row["policy"] is None else _policy_decoder.decode(row["policy"]),
        policy_revision_id=row["policy_revision_id"],
    )


def _filters(alias: str, runtime: str | None, architecture: str | None) -> tuple[str, list]:
    """SQL conditions (each starting with ' AND') keeping versions compatible with a runtime / architecture.
    A version that declared no list (NULL) matches no filter."""
    sql, params = "", []
    if runtime is not None:
        sql += f" AND EXISTS (SELECT 1 FROM json_each({alias}.compatible_runtimes) WHERE value = ?)"
        params.append(runtime)
    if architecture is not None:
        sql += f" AND EXISTS (SELECT 1 FROM json_each({alias}.compatible_architectures) WHERE value = ?)"
        params.append(architecture)
    return sql, params


async def package_in_use(conn, digest: str) -> bool:
    """Whether a code package is still needed: the code of a function version or of a layer version, or named
    (by its hex digest) in a function version's configuration, which is where a function records the layers
    it uses; their content must outlive a deleted layer version, as on AWS. `conn` is a transaction's
    connection."""
    for sql in (
        "SELECT 1 FROM versions WHERE code_sha256 = ? LIMIT 1",
        "SELECT 1 FROM layer_versions WHERE code_sha256 = ? LIMIT 1",
        "SELECT 1 FROM versions WHERE instr(config, ?) > 0 LIMIT 1",
    ):
        async with conn.execute(sql, (digest,)) as cur:
            if await cur.fetchone():
                return True
    return False


class Layers:
    """Layer versions and their policies. Methods return None for a layer version that does not exist and raise
    `faas.errors` exceptions for the conflicts AWS reports in words that do not depend on the ARN."""

    def __init__(self, db: Database):
        self.db = db

    async def publish(
        self, name: str, pkg: CodePackage, *, description: str = "", license_info: str | None = None,
        compatible_runtimes: list[str] | None = None, compatible_architectures: list[str] | None = None,
    ) -> LayerVersion:
        """Store the next version of a layer (creating the layer on first use)."""
        from faas.store.records import aws_timestamp  # here: records may import LayerRef from this module

        now = aws_timestamp()
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT OR IGNORE INTO code_packages(sha256, size, unzipped_size, created_at) VALUES (?, ?, ?, ?)",
                (pkg.sha256, pkg.size, pkg.unzipped_size, datetime.now(timezone.utc).isoformat()),
            )
            await conn.execute("INSERT OR IGNORE INTO layers(name, created_at) VALUES (?, ?)", (name, now))
            async with conn.execute("SELECT next_version FROM layers WHERE name = ?", (name,)) as cur:
                number = int((await cur.fetchone())[0])
            await conn.execute("UPDATE layers SET next_version = ? WHERE name = ?", (number + 1, name))
            await conn.execute(
                "INSERT INTO layer_versions(layer_name, version, description, license_info, compatible_runtimes,"
                " compatible_architectures, code_sha256, created_date) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, number, description, license_info, _json_list(compatible_runtimes),
                 _json_list(compatible_architectures), pkg.sha256, now),
            )
        return LayerVersion(
            layer_name=name, version=number, code_sha256=pkg.sha256, code_size=pkg.size, created_date=now,
            description=description, license_info=license_info,
            compatible_runtimes=None if compatible_runtimes is None else list(compatible_runtimes),
            compatible_architectures=None if compatible_architectures is None else list(compatible_architectures),
        )

    async def get(self, name: str, version: int) -> LayerVersion | None:
        row = await self.db.fetchone(f"{_SELECT} WHERE lv.layer_name = ? AND lv.version = ?", (name, version))
        return _from_row(row) if row else None

    async def list_versions(
        self, name: str, *, runtime: str | None = None, architecture: str | None = None,
        before: int | None = None, limit: int = 50,
    ) -> list[LayerVersion]:
        """A layer's versions, newest first, optionally only those compatible with a runtime and/or an
        architecture, starting below version `before` (the last one of the previous page)."""
        cond, params = _filters("lv", runtime, architecture)
        if before is not None:
            cond += " AND lv.version < ?"
            params.append(before)
        rows = await self.db.fetchall(
            f"{_SELECT} WHERE lv.layer_name = ?{cond} ORDER BY lv.version DESC LIMIT ?", (name, *params, limit)
        )
        return [_from_row(r) for r in rows]

    async def list_layers(
        self, *, runtime: str | None = None, architecture: str | None = None,
        after: str | None = None, limit: int = 50,
    ) -> list[LayerVersion]:
        """The newest version of each layer that has one matching the filters, ordered by layer name, starting
        after the layer name `after`."""
        outer, outer_params = _filters("lv", runtime, architecture)
        inner, inner_params = _filters("v2", runtime, architecture)
        rows = await self.db.fetchall(
            f"{_SELECT} WHERE lv.layer_name > ?{outer}"
            " AND lv.version = (SELECT MAX(v2.version) FROM layer_versions v2"
            f" WHERE v2.layer_name = lv.layer_name{inner})"
            " ORDER BY lv.layer_name LIMIT ?",
            (after or "", *outer_params, *inner_params, limit),
        )
        return [_from_row(r) for r in rows]

    async def delete(self, name: str, version: int) -> str | None:
        """Delete a layer version (a missing one is fine). Returns the code digest no one needs any more, which
        the caller removes from the CodeStore, or None."""
        async with self.db.transaction() as conn:
            async with conn.execute(
                "SELECT code_sha256 FROM layer_versions WHERE layer_name = ? AND version = ?", (name, version)
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                return None
            digest = row[0]
            await conn.execute("DELETE FROM layer_versions WHERE layer_name = ? AND version = ?", (name, version))
            if await package_in_use(conn, digest):
                return None
            await conn.execute("DELETE FROM code_packages WHERE sha256 = ?", (digest,))
        return digest

    async def total_code_size(self) -> int:
        """Zipped bytes of all layer versions (each version counts, as AWS's AccountUsage.TotalCodeSize does)."""
        row = await self.db.fetchone(
            "SELECT COALESCE(SUM(p.size), 0) AS total FROM layer_versions lv"
            " JOIN code_packages p ON p.sha256 = lv.code_sha256"
        )
        return int(row["total"]) if row else 0

    # -- permissions ---------------------------------------------------------------------------------------

    async def _change_policy(
        self, name: str, version: int,
        change: Callable[[list[PolicyStatement], str | None], list[PolicyStatement]],
    ) -> tuple[LayerVersion, str | None] | None:
        """Apply `change(statements, revision_id)` in one transaction; it may raise to abort. Returns the
        layer version with its new policy, or None when the layer version does not exist."""
        from faas.store.records import new_revision  # here: records may import LayerRef from this module

        async with self.db.transaction() as conn:
            async with conn.execute(f"{_SELECT} WHERE lv.layer_name = ? AND lv.version = ?", (name, version)) as cur:
                row = await cur.fetchone()
            if row is None:
                return None
            current = _from_row(row)
            statements = change(list(current.policy), current.policy_revision_id)
            revision = new_revision() if statements else None
            await conn.execute(
                "UPDATE layer_versions SET policy = ?, policy_revision_id = ? WHERE layer_name = ? AND version = ?",
                (_encoder.encode(statements).decode() if statements else None, revision, name, version),
            )
        updated = msgspec.structs.replace(current, policy=statements, policy_revision_id=revision)
        return updated, revision

    async def add_permission(
        self, name: str, version: int, statement: PolicyStatement, revision_id: str | None = None
    ) -> LayerVersion | None:
        """Add a statement. None when the layer version does not exist; 409 for a statement id in use, 412 for a
        RevisionId that is not the policy's current one."""

        def change(statements: list[PolicyStatement], current: str | None) -> list[PolicyStatement]:
            if any(s.sid == statement.sid for s in statements):
                raise ResourceConflictException(
                    f"The statement id ({statement.sid}) provided already exists. Please provide a new statement "
                    "id, or remove the existing statement."
                )
            if revision_id is not None and revision_id != current:
                raise PreconditionFailedException(LAYER_REVISION_MISMATCH)
            return [*statements, statement]

        done = await self._change_policy(name, version, change)
        return None if done is None else done[0]

    async def remove_permission(
        self, name: str, version: int, sid: str, revision_id: str | None = None
    ) -> LayerVersion | None:
        """Remove a statement. None when the layer version does not exist; 404 when there is no policy or no
        such statement, 412 for a stale RevisionId."""

        def change(statements: list[PolicyStatement], current: str | None) -> list[PolicyStatement]:
            if not statements:
                raise ResourceNotFoundException(NO_POLICY)
            if revision_id is not None and revision_id != current:
                raise PreconditionFailedException(LAYER_REVISION_MISMATCH)
            kept = [s for s in statements if s.sid != sid]
            if len(kept) == len(statements):
                raise ResourceNotFoundException(f"Statement {sid} is not found in resource policy.")
            return kept

        done = await self._change_policy(name, version, change)
        return None if done is None else done[0]


# -- /opt ---------------------------------------------------------------------------------------------------

_OPT_LOCKS: dict[str, asyncio.Lock] = {}
_STALE_WORK_SECONDS = 3600


def opt_key(layer_digests: list[str]) -> str:
    """The cache key of a merged /opt: a hash of the ordered list of layer digests."""
    return hashlib.sha256("\n".join(d.lower() for d in layer_digests).encode()).hexdigest()


async def assemble_opt(code: CodeStore, root: Path, layer_digests: list[str]) -> Path:
    """The directory that merges the extracted trees of the given layers in order, later layers overriding
    earlier ones (Lambda's /opt). Built once per ordered digest list under `root/<key>`, in a temporary
    directory renamed into place, so a reader never sees a partial merge. Files are hard links into the code
    store where possible (copies otherwise), so they keep their mode and survive the package's deletion.
    Raises FileNotFoundError when a layer's package is not in the store."""
    root = Path(root)
    key = opt_key(layer_digests)
    final = root / key
    if final.is_dir():
        return final
    trees = [code.tree(d) for d in layer_digests]  # ValueError for a malformed digest
    lock = _OPT_LOCKS.setdefault(str(final), asyncio.Lock())
    try:
        async with lock:
            if not final.is_dir():
                await asyncio.to_thread(_build_opt, trees, root, final)
    finally:
        _OPT_LOCKS.pop(str(final), None)
    return final


async def prune_opt(root: Path, in_use: list[list[str]]) -> int:
    """Remove the merged /opt directories under `root` that no function version's layer list (`in_use`) makes.
    For start-up, before any instance runs from them: a merge outlives the versions that used it, and its hard
    links keep a deleted layer's files on disk. Returns how many were removed."""
    keep = {opt_key(digests) for digests in in_use} | {"tmp"}
    return await asyncio.to_thread(_prune_opt, Path(root), keep)


def _prune_opt(root: Path, keep: set[str]) -> int:
    if not root.is_dir():
        return 0
    removed = 0
    for entry in root.iterdir():
        if entry.name not in keep:
            _remove(entry)
            removed += 1
    return removed


def _build_opt(trees: list[Path], root: Path, final: Path) -> None:
    for tree in trees:
        if not tree.is_dir():
            raise FileNotFoundError(f"layer package {tree.name} is not in the code store")
    work_root = root / "tmp"
    work_root.mkdir(parents=True, exist_ok=True)
    _sweep(work_root)
    work = Path(tempfile.mkdtemp(prefix=f"{final.name}.", suffix=".build", dir=work_root))
    try:
        for tree in trees:
            _merge(tree, work)
        _drop_escaping_links(work)
        os.chmod(work, 0o755)
        try:
            os.rename(work, final)
        except OSError:
            if not final.is_dir():  # not a lost race with an identical build
                raise
            _remove(work)
    except BaseException:
        _remove(work)
        raise


def _merge(src_root: Path, dest_root: Path) -> None:
    """Lay `src_root` over `dest_root`: what `src_root` has replaces whatever is at the same path."""
    for dirpath, dirnames, filenames in os.walk(src_root):
        rel = os.path.relpath(dirpath, src_root)
        dest_dir = dest_root if rel == "." else dest_root / rel
        # os.walk lists symlinks to directories among dirnames; they are links here, not places to descend.
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = [d for d in dirnames if d not in links]
        for name in dirnames:
            src = os.path.join(dirpath, name)
            dest = dest_dir / name
            if not (dest.is_dir() and not dest.is_symlink()):
                _remove(dest)
                dest.mkdir()
            os.chmod(dest, stat.S_IMODE(os.lstat(src).st_mode) | 0o700)
        for name in filenames + links:
            src = os.path.join(dirpath, name)
            dest = dest_dir / name
            _remove(dest)
            st = os.lstat(src)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(src), dest)
            elif stat.S_ISREG(st.st_mode):
                _link_or_copy(src, dest)


def _link_or_copy(src: str, dest: Path) -> None:
    try:
        os.link(src, dest, follow_symlinks=False)
    except OSError:  # another file system, no hard links there, too many links, ...
        shutil.copy2(src, dest, follow_symlinks=False)


def _drop_escaping_links(top: Path) -> None:
    """Each layer's links stay inside that layer's tree, but merged, a link from one layer can run through a
    link from another (`a -> .` then `b -> a/..`). Remove any link that now resolves outside the merge."""
    real_top = os.path.realpath(top)
    changed = True
    while changed:
        changed = False
        for dirpath, dirnames, filenames in os.walk(top):
            for name in filenames + dirnames:
                path = os.path.join(dirpath, name)
                if not os.path.islink(path):
                    continue
                resolved = os.path.realpath(path)
                if resolved != real_top and not resolved.startswith(real_top + os.sep):
                    log.warning("dropping layer symlink %s: it resolves outside /opt", os.path.relpath(path, top))
                    os.unlink(path)
                    changed = True


def _sweep(work_root: Path) -> None:
    """Remove builds left behind by a process that died mid-way (old enough not to be in progress)."""
    cutoff = time.time() - _STALE_WORK_SECONDS
    for entry in work_root.iterdir():
        try:
            if entry.lstat().st_mtime < cutoff:
                _remove(entry)
        except FileNotFoundError:
            pass


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
