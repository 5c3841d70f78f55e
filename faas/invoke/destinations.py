"""Where the outcome of an asynchronous invocation goes: OnSuccess / OnFailure destinations (a function, a
queue, a topic or an event bus) with Lambda's invocation record, and the function's dead-letter queue."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import msgspec

from faas.arn import LATEST, Arns
from faas.store.async_events import AsyncEvent, EventInvokeConfig

if TYPE_CHECKING:
    from faas.invoke.router import InvokeResult
    from faas.services import Services

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    event: AsyncEvent
    config: EventInvokeConfig
    attempts: int = 0
    result: InvokeResult | None = field(default=None)


def _json_or_text(raw: bytes) -> Any:
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw.decode("utf-8", "replace")


def invocation_record(arns: Arns, outcome: Outcome, condition: str) -> dict[str, Any]:
    """Lambda's destination record (version 1.0), keys in AWS's order."""
    event = outcome.event
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    record: dict[str, Any] = {
        "version": "1.0",
        "timestamp": stamp,
        "requestContext": {
            "requestId": event.request_id,
            "functionArn": arns.function(event.function_name, event.qualifier or LATEST),
            "condition": condition,
            "approximateInvokeCount": outcome.attempts,
        },
        "requestPayload": _json_or_text(event.payload),
    }
    result = outcome.result
    if result is not None and condition != "ZeroReservedConcurrency":
        response: dict[str, Any] = {"statusCode": 200, "executedVersion": result.executed_version}
        if result.function_error:
            response["functionError"] = result.function_error
        record["responseContext"] = response
        record["responsePayload"] = _json_or_text(result.payload)
    return record


class Destinations:
    """Delivers records through the built-in services, found on the server's `Services` at call time."""

    def __init__(self, arns: Arns):
        self.arns = arns
        self.services: Services | None = None

    async def deliver(self, outcome: Outcome, condition: str) -> bool:
        """Send the outcome where the config says. Returns True when a failure was taken by a destination
        or the dead-letter queue (False means it was dropped)."""
        success = condition == "Success"
        target = outcome.config.on_success if success else outcome.config.on_failure
        if target:
            try:
                await self._send(target, outcome, condition, success)
                return True
            except Exception:
                log.exception("destination %s of %s failed", target, outcome.event.request_id)
                if success:
                    return True
        if success:
            return True
        return await self._dead_letter(outcome)

    async def _send(self, target: str, outcome: Outcome, condition: str, success: bool) -> None:
        svc = self.services
        assert svc is not None
        record = invocation_record(self.arns, outcome, condition)
        body = msgspec.json.encode(record)
        service = target.split(":")[2] if target.count(":") >= 5 else ""
        if service == "sqs":
            await svc.queues.send_by_arn(target, body.decode())
        elif service == "sns":
            await svc.topics.publish_by_arn(target, body.decode())
        elif service == "events":
            event = outcome.event
            results = await svc.events.put_events([{
                "Source": "lambda",
                "DetailType": f"Lambda Function Invocation Result - {'Success' if success else 'Failure'}",
                "Detail": body.decode(),
                "Resources": [target, self.arns.function(event.function_name, event.qualifier or LATEST)],
                "EventBusName": target,
            }])
            if results and "ErrorCode" in results[0]:
                raise ValueError(f"event bus {target}: {results[0]['ErrorCode']} {results[0].get('ErrorMessage')}")
        elif service == "lambda":
            ref = self.arns.parse(target)
            await svc.async_queue.enqueue(ref.name, ref.qualifier, body)
        else:
            raise ValueError(f"unsupported destination {target}")

    async def _dead_letter(self, outcome: Outcome) -> bool:
        svc = self.services
        event = outcome.event
        fv = await svc.registry.get_version(event.function_name) if svc else None
        target = fv.config.dead_letter_target if fv else None
        if not target or svc is None:
            return False
        result = outcome.result
        error_message = ""
        if result is not None and result.function_error:
            error = _json_or_text(result.payload)
            error_message = str(error.get("errorMessage", "")) if isinstance(error, dict) else str(error)
        attributes = {
            "RequestID": {"DataType": "String", "StringValue": event.request_id},
            "ErrorCode": {"DataType": "Number", "StringValue": "200"},
            "ErrorMessage": {"DataType": "String", "StringValue": error_message or "Unknown"},
        }
        try:
            if target.split(":")[2] == "sns":
                await svc.topics.publish_by_arn(target, event.payload.decode("utf-8", "replace"),
                                                message_attributes=attributes)
            else:
                await svc.queues.send_by_arn(target, event.payload.decode("utf-8", "replace"),
                                             message_attributes=attributes)
        except Exception:
            log.exception("dead-letter queue %s of %s failed", target, event.function_name)
            return False
        return True
