"""The SQS API on the shared port (JSON protocol, `X-Amz-Target: AmazonSQS.<Operation>`): input as parsed and
validated against botocore's `sqs` model -> `Queues` -> SQS's output shapes.

Queue URLs are `<base_url>/<account>/<name>`; a QueueUrl naming another host (localhost vs 127.0.0.1, or an
AWS endpoint) resolves by account and name.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aiohttp import web

from faas.api.json_protocol import json_operation
from faas.services import SERVICES
from faas.services.queues import OutgoingMessage, Queue, Queues, ReceivedMessage, SendResult
from faas.services.sqs import (
    ATTRIBUTE_ORDER,
    MAX_BATCH_BYTES,
    SYSTEM_ATTRIBUTES,
    SqsError,
    check_batch_entries,
    invalid_attribute_name,
    invalid_parameter,
    system_attribute_names,
)

Params = dict[str, Any]

# SQS answers InvalidAttributeName for names outside its model's enums, and accepts message system attribute
# names in ReceiveMessage's (deprecated) AttributeNames, whose model enum holds only queue attribute names.
_QUEUE_ATTRIBUTE_NAMES = frozenset({"All", *ATTRIBUTE_ORDER})
_SYSTEM_ATTRIBUTE_NAMES = frozenset({"All", *SYSTEM_ATTRIBUTES})


def _check_names(names: Any, allowed: frozenset[str]) -> None:
    for name in names or ():
        if name not in allowed:
            raise invalid_attribute_name(name)


def _queue_attribute_names(params: Params, errors: list[str]) -> list[str]:
    _check_names(params.get("AttributeNames"), _QUEUE_ATTRIBUTE_NAMES)
    _check_names(params.get("Attributes"), _QUEUE_ATTRIBUTE_NAMES)
    return errors


def _receive_attribute_names(params: Params, errors: list[str]) -> list[str]:
    _check_names(params.get("AttributeNames"), _QUEUE_ATTRIBUTE_NAMES | _SYSTEM_ATTRIBUTE_NAMES)
    _check_names(params.get("MessageSystemAttributeNames"), _SYSTEM_ATTRIBUTE_NAMES)
    return [e for e in errors if " at 'attributeNames' " not in e]


def _queues(request: web.Request) -> Queues:
    return request.app[SERVICES].queues


def _queue(request: web.Request, params: Params) -> Queue:
    return _queues(request).by_url(params["QueueUrl"])


def _url(request: web.Request, queue: Queue) -> str:
    svc = request.app[SERVICES]
    return f"{svc.config.base_url}/{svc.arns.account_id}/{queue.name}"


def _page(request: web.Request, queues: list[Queue], params: Params, key: str) -> Params:
    """One page of queue URLs, as ListQueues and ListDeadLetterSourceQueues give them (NextToken: the last name)."""
    max_results, token = params.get("MaxResults"), params.get("NextToken")
    if max_results is not None and not 1 <= max_results <= 1000:
        raise invalid_parameter(f"Value {max_results} for parameter MaxResults is invalid. "
                                "Reason: MaxResults must be an integer between 1 and 1000.")
    if token:
        try:
            after = base64.urlsafe_b64decode(token.encode()).decode()
        except (binascii.Error, UnicodeError, ValueError):
            raise invalid_parameter("Invalid NextToken value.") from None
        queues = [q for q in queues if q.name > after]
    out: Params = {}
    page = queues[:max_results or 1000]
    if page or key == "queueUrls":
        out[key] = [_url(request, q) for q in page]
    if max_results and len(queues) > len(page):
        out["NextToken"] = base64.urlsafe_b64encode(page[-1].name.encode()).decode()
    return out


def _failure(entry_id: str, err: SqsError) -> Params:
    return {"Id": entry_id, "SenderFault": err.sender_fault, "Code": err.code, "Message": err.message}


# ---------------------------------------------------------------------------------------------- queues


@json_operation("sqs", "CreateQueue", on_invalid=_queue_attribute_names)
async def create_queue(request: web.Request, params: Params) -> Params:
    queue = await _queues(request).create(params["QueueName"], params.get("Attributes"), params.get("tags"))
    return {"QueueUrl": _url(request, queue)}


@json_operation("sqs", "GetQueueUrl")
async def get_queue_url(request: web.Request, params: Params) -> Params:
    queue = _queues(request).get(params["QueueName"], params.get("QueueOwnerAWSAccountId"))
    return {"QueueUrl": _url(request, queue)}


@json_operation("sqs", "ListQueues")
async def list_queues(request: web.Request, params: Params) -> Params:
    return _page(request, _queues(request).list_queues(params.get("QueueNamePrefix")), params, "QueueUrls")


@json_operation("sqs", "ListDeadLetterSourceQueues")
async def list_dead_letter_source_queues(request: web.Request, params: Params) -> Params:
    queues = _queues(request)
    return _page(request, queues.dead_letter_sources(_queue(request, params)), params, "queueUrls")


@json_operation("sqs", "DeleteQueue")
async def delete_queue(request: web.Request, params: Params) -> Params:
    await _queues(request).delete(_queue(request, params))
    return {}


@json_operation("sqs", "GetQueueAttributes", on_invalid=_queue_attribute_names)
async def get_queue_attributes(request: web.Request, params: Params) -> Params:
    attributes = await _queues(request).get_attributes(_queue(request, params), params.get("AttributeNames"))
    return {"Attributes": attributes} if attributes else {}


@json_operation("sqs", "SetQueueAttributes", on_invalid=_queue_attribute_names)
async def set_queue_attributes(request: web.Request, params: Params) -> Params:
    await _queues(request).set_attributes(_queue(request, params), params.get("Attributes") or {})
    return {}


@json_operation("sqs", "PurgeQueue")
async def purge_queue(request: web.Request, params: Params) -> Params:
    await _queues(request).purge(_queue(request, params))
    return {}


@json_operation("sqs", "TagQueue")
async def tag_queue(request: web.Request, params: Params) -> Params:
    await _queues(request).tag(_queue(request, params), params["Tags"])
    return {}


@json_operation("sqs", "UntagQueue")
async def untag_queue(request: web.Request, params: Params) -> Params:
    await _queues(request).untag(_queue(request, params), params["TagKeys"])
    return {}


@json_operation("sqs", "ListQueueTags")
async def list_queue_tags(request: web.Request, params: Params) -> Params:
    tags = _queue(request, params).tags
    return {"Tags": dict(tags)} if tags else {}


# ---------------------------------------------------------------------------------------------- messages


def _outgoing(params: Params) -> OutgoingMessage:
    return OutgoingMessage(
        params.get("MessageBody") or "", params.get("MessageAttributes"), params.get("MessageSystemAttributes"),
        params.get("DelaySeconds"), params.get("MessageGroupId"), params.get("MessageDeduplicationId"),
    )


def _sent(result: SendResult) -> Params:
    out: Params = {"MessageId": result.message_id, "MD5OfMessageBody": result.md5_of_body}
    if result.md5_of_message_attributes:
        out["MD5OfMessageAttributes"] = result.md5_of_message_attributes
    if result.md5_of_system_attributes:
        out["MD5OfMessageSystemAttributes"] = result.md5_of_system_attributes
    if result.sequence_number:
        out["SequenceNumber"] = result.sequence_number
    return out


@json_operation("sqs", "SendMessage")
async def send_message(request: web.Request, params: Params) -> Params:
    outcome = (await _queues(request).send(_queue(request, params), [_outgoing(params)]))[0]
    if isinstance(outcome, SqsError):
        raise outcome
    return _sent(outcome)


def _batch_size(entries: list[Params]) -> int:
    size = 0
    for entry in entries:
        size += len((entry.get("MessageBody") or "").encode())
        for name, value in (entry.get("MessageAttributes") or {}).items():
            size += len(name.encode()) + len(str(value.get("DataType", "")).encode())
            size += len(value.get("BinaryValue") or b"") + len((value.get("StringValue") or "").encode())
    return size


@json_operation("sqs", "SendMessageBatch")
async def send_message_batch(request: web.Request, params: Params) -> Params:
    queue = _queue(request, params)
    entries = check_batch_entries(params.get("Entries"), "SendMessageBatchRequestEntry")
    size = _batch_size(entries)
    if size > MAX_BATCH_BYTES:
        raise SqsError("BatchRequestTooLong",
                       f"Batch requests cannot be longer than {MAX_BATCH_BYTES} bytes. You have sent {size} bytes.")
    outcomes = await _queues(request).send(queue, [_outgoing(e) for e in entries])
    successful, failed = [], []
    for entry, outcome in zip(entries, outcomes):
        if isinstance(outcome, SqsError):
            failed.append(_failure(entry["Id"], outcome))
        else:
            successful.append({"Id": entry["Id"], **_sent(outcome)})
    return {"Successful": successful, "Failed": failed}


def _message(m: ReceivedMessage) -> Params:
    out: Params = {"MessageId": m.message_id, "ReceiptHandle": m.receipt_handle, "MD5OfBody": m.md5_of_body,
                   "Body": m.body}
    if m.attributes:
        out["Attributes"] = m.attributes
    if m.message_attributes:
        out["MD5OfMessageAttributes"] = m.md5_of_message_attributes
        out["MessageAttributes"] = m.message_attributes  # binary values go out base64-encoded
    return out


@json_operation("sqs", "ReceiveMessage", on_invalid=_receive_attribute_names)
async def receive_message(request: web.Request, params: Params) -> Params:
    max_messages = params.get("MaxNumberOfMessages")
    messages = await _queues(request).receive(
        _queue(request, params),
        1 if max_messages is None else max_messages,
        params.get("VisibilityTimeout"),
        params.get("WaitTimeSeconds"),
        system_attributes=system_attribute_names(params.get("AttributeNames"),
                                                 params.get("MessageSystemAttributeNames")),
        message_attributes=params.get("MessageAttributeNames"),
    )
    return {"Messages": [_message(m) for m in messages]} if messages else {}


@json_operation("sqs", "DeleteMessage")
async def delete_message(request: web.Request, params: Params) -> Params:
    error = (await _queues(request).delete_messages(_queue(request, params), [params["ReceiptHandle"]]))[0]
    if error is not None:
        raise error
    return {}


@json_operation("sqs", "DeleteMessageBatch")
async def delete_message_batch(request: web.Request, params: Params) -> Params:
    queue = _queue(request, params)
    entries = check_batch_entries(params.get("Entries"), "DeleteMessageBatchRequestEntry")
    errors = await _queues(request).delete_messages(queue, [e["ReceiptHandle"] for e in entries])
    return {
        "Successful": [{"Id": e["Id"]} for e, err in zip(entries, errors) if err is None],
        "Failed": [_failure(e["Id"], err) for e, err in zip(entries, errors) if err is not None],
    }


@json_operation("sqs", "ChangeMessageVisibility")
async def change_message_visibility(request: web.Request, params: Params) -> Params:
    queue = _queue(request, params)
    error = (await _queues(request).change_visibility(queue, [(params["ReceiptHandle"],
                                                               params["VisibilityTimeout"])]))[0]
    if error is not None:
        raise error
    return {}


@json_operation("sqs", "ChangeMessageVisibilityBatch")
async def change_message_visibility_batch(request: web.Request, params: Params) -> Params:
    queue = _queue(request, params)
    entries = check_batch_entries(params.get("Entries"), "ChangeMessageVisibilityBatchRequestEntry")
    for entry in entries:
        if entry.get("VisibilityTimeout") is None:
            raise SqsError("MissingParameter", "The request must contain the parameter VisibilityTimeout.")
    errors = await _queues(request).change_visibility(
        queue, [(e["ReceiptHandle"], e["VisibilityTimeout"]) for e in entries]
    )
    return {
        "Successful": [{"Id": e["Id"]} for e, err in zip(entries, errors) if err is None],
        "Failed": [_failure(e["Id"], err) for e, err in zip(entries, errors) if err is not None],
    }
