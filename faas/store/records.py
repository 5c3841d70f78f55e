"""What the registry stores: a function version's configuration and state, as msgspec structs."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime, timezone

import msgspec

from faas.store.layers import LayerRef


class LoggingSettings(msgspec.Struct, rename="pascal", omit_defaults=True):
    log_format: str = "Text"
    log_group: str | None = None
    application_log_level: str | None = None
    system_log_level: str | None = None


class FunctionConfig(msgspec.Struct, rename="pascal", omit_defaults=True):
    """The configuration of one function version, keyed as in the Lambda API (PascalCase on disk)."""

    role: str
    runtime: str | None = None
    handler: str | None = None
    description: str = ""
    timeout: int = 3
    memory_size: int = 128
    # None: no Environment was ever sent (AWS then omits the key); {}: sent empty (AWS echoes it).
    environment: dict[str, str] | None = None
    ephemeral_storage: int = 512
    architectures: list[str] = msgspec.field(default_factory=lambda: ["x86_64"])
    package_type: str = "Zip"
    tracing_mode: str = "PassThrough"
    logging: LoggingSettings = msgspec.field(default_factory=LoggingSettings)
    dead_letter_target: str | None = None
    kms_key_arn: str | None = None
    snap_start: str = "None"
    layers: list[LayerRef] = msgspec.field(default_factory=list)


class FunctionVersion(msgspec.Struct):
    """`$LATEST` or a published version: configuration, code and lifecycle state."""

    function_name: str
    version: str
    config: FunctionConfig
    code_sha256: str  # hex digest
    code_size: int
    revision_id: str
    last_modified: str
    state: str = "Active"
    state_reason: str | None = None
    state_reason_code: str | None = None
    last_update: str = "Successful"

    @property
    def code_sha256_b64(self) -> str:
        return base64.b64encode(bytes.fromhex(self.code_sha256)).decode()


class FunctionRecord(msgspec.Struct):
    name: str
    created_at: str
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    reserved_concurrency: int | None = None


def aws_timestamp(when: datetime | None = None) -> str:
    """A function's LastModified as AWS writes it: 2024-01-01T12:00:00.000+0000."""
    when = when or datetime.now(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+0000"


def new_revision() -> str:
    return str(uuid.uuid4())
