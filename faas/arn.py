"""Function names, ARNs and qualifiers: parsed and formatted in one place."""

from __future__ import annotations

import hashlib
import re

import msgspec

from faas.errors import (
    AccessDeniedException,
    InvalidParameterValueException,
    ResourceNotFoundException,
)

LATEST = "$LATEST"
MAX_NAME = 64

_FUNCTION_REF = re.compile(
    r"(?:arn:(?:aws[a-zA-Z-]*)?:lambda:)?"
    r"(?:(?P<region>(?:eusc-)?[a-z]{2}(?:(?:-gov)|(?:-iso(?:[a-z]?)))?-[a-z]+-\d{1}):)?"
    r"(?:(?P<account>\d{12}):)?"
    r"(?:function:)?"
    r"(?P<name>[a-zA-Z0-9-_\.]+)"
    r"(?::(?P<qualifier>\$LATEST(?:\.PUBLISHED)?|[a-zA-Z0-9-_]+))?"
)


class FunctionRef(msgspec.Struct, frozen=True):
    """A function named by a request: its bare name and the qualifier the name carried, if any."""

    name: str
    qualifier: str | None = None


class Arns:
    """Formats ARNs for one region and account, and resolves what clients send into `FunctionRef`s."""

    def __init__(self, region: str, account_id: str):
        self.region = region
        self.account_id = account_id
        self._prefix = f"arn:aws:lambda:{region}:{account_id}:"

    def function(self, name: str, qualifier: str | None = None) -> str:
        arn = f"{self._prefix}function:{name}"
        return f"{arn}:{qualifier}" if qualifier else arn

    def runtime_version(self, runtime: str) -> str:
        # A stable id per runtime; AWS leaves the account field of runtime ARNs empty.
        digest = hashlib.sha256(runtime.encode()).hexdigest()
        return f"arn:aws:lambda:{self.region}::runtime:{digest}"

    def parse(
        self, value: str, qualifier: str | None = None, *, for_invoke: bool = False, for_create: bool = False
    ) -> FunctionRef:
        """Resolve a FunctionName input (name, `name:q`, partial or full ARN) plus an optional Qualifier.

        The model's pattern has already been checked. Raises what AWS raises for another region or account,
        an over-long bare name (not found) and a qualifier that contradicts the one in the name.
        """
        m = _FUNCTION_REF.fullmatch(value)
        if m is None:  # the model's pattern admits a few shapes this one does not; AWS treats them as absent
            raise ResourceNotFoundException(f"Function not found: {self.function(value)}")
        region, account, name, derived = m.group("region", "account", "name", "qualifier")
        if region and region != self.region:
            raise ResourceNotFoundException(
                f"Functions from '{region}' are not reachable in this region ('{self.region}')"
            )
        if account and account != self.account_id:
            raise AccessDeniedException(None)
        if derived is not None and qualifier is not None and derived != qualifier:
            raise InvalidParameterValueException(
                "The derived qualifier from the function name does not match the specified qualifier."
            )
        q = derived if derived is not None else qualifier
        if len(name) > MAX_NAME and for_create:
            raise InvalidParameterValueException(
                f"1 validation error detected: Value '{name}' at 'functionName' failed to satisfy constraint: "
                f"Member must have length less than or equal to {MAX_NAME}"
            )
        if len(name) > MAX_NAME:
            suffix = q or (LATEST if for_invoke else None)
            raise ResourceNotFoundException(f"Function not found: {self.function(name, suffix)}")
        return FunctionRef(name, q)
