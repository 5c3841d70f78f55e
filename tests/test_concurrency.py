"""Scaling and concurrency controls: reserved and provisioned concurrency, the memory budget, freezing,
instance lifetime and the scale-up rate, through boto3 against real servers."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import time

import pytest
from botocore.exceptions import ClientError

from conftest import create_function, make_zip, wait_for

PROBE = """
import json, os, time
def handler(event, context):
    if event.get("marker"):
        open(event["marker"], "w").close()
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid(), "init": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"]}
"""


def call(lam, name: str, qualifier: str | None = None, **event):
    kwargs = {"Qualifier": qualifier} if qualifier else {}
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode(), LogType="Tail", **kwargs)
    body = json.loads(resp["Payload"].read())
    assert "FunctionError" not in resp, body
    return body, base64.b64decode(resp["LogResult"]).decode()


def throttle_of(exc) -> tuple[int, str, str]:
    r = exc.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Message"], r.get("Reason", "")


def pid_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


def test_reserved_concurrency(lam, tmp_path):
    name, _ = create_function(lam, PROBE)
    assert lam.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions") is None
    assert lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)[
        "ReservedConcurrentExecutions"] == 0
    with pytest.raises(lam.exceptions.TooManyRequestsException) as exc:
        lam.invoke(FunctionName=name)
    assert throttle_of(exc) == (429, "Rate Exceeded.", "ReservedFunctionConcurrentInvocationLimitExceeded")
    assert lam.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 0}
    settings = lam.get_account_settings()["AccountLimit"]
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    after = lam.get_account_settings()["AccountLimit"]
    assert after["UnreservedConcurrentExecutions"] == settings["UnreservedConcurrentExecutions"] - 1
    marker = tmp_path / "running"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(call, lam, name, marker=str(marker), sleep=1.5)
        wait_for(marker.exists, timeout=20)
        with pytest.raises(lam.exceptions.TooManyRequestsException) as exc:
            lam.invoke(FunctionName=name)
        assert throttle_of(exc)[2] == "ReservedFunctionConcurrentInvocationLimitExceeded"
        running.result(timeout=30)
    lam.delete_function_concurrency(FunctionName=name)
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)
    assert "Concurrency" not in lam.get_function(FunctionName=name)
    assert call(lam, name)[0]["pid"] > 0


def test_reserved_concurrency_errors(lam):
    name, _ = create_function(lam, PROBE)
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=901)
    assert exc.value.response["Error"]["Message"] == (
        "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution "
        "below its minimum value of [100].")
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.put_function_concurrency(FunctionName=f"{name}:$LATEST", ReservedConcurrentExecutions=1)
    assert exc.value.response["Error"]["Message"].startswith("This operation is permitted on Lambda functions only.")
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.put_function_concurrency(FunctionName="nope-missing", ReservedConcurrentExecutions=1)
    assert exc.value.response["Error"]["Message"].endswith("function:nope-missing:$LATEST")


def test_provisioned_concurrency(own_server, tmp_path):
    srv = own_server(FAAS_RUNTIME__IDLE_TIMEOUT=1, FAAS_RUNTIME__REAP_INTERVAL=0.2, FAAS_RUNTIME__PROVISION_INTERVAL=0.2)
    lam = srv.client()
    name, _ = create_function(lam, PROBE, Publish=True)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="$LATEST", ProvisionedConcurrentExecutions=1)
    assert exc.value.response["Error"]["Message"] == (
        "Provisioned Concurrency Configs cannot be applied to unpublished function versions.")
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="nope", ProvisionedConcurrentExecutions=1)
    assert exc.value.response["Error"]["Message"].startswith("Cannot find alias arn:")
    with pytest.raises(ClientError) as exc:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=0)
    assert exc.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")

    put = lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=2)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert put["Status"] == "IN_PROGRESS" and put["RequestedProvisionedConcurrentExecutions"] == 2
    assert put["AllocatedProvisionedConcurrentExecutions"] == 0
    ready = wait_for(lambda: (c := lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live"))
                     ["Status"] == "READY" and c, timeout=30)
    assert ready["AllocatedProvisionedConcurrentExecutions"] == ready["AvailableProvisionedConcurrentExecutions"] == 2
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1)

    body, log = call(lam, name, "live")
    assert body["init"] == "provisioned-concurrency"
    assert "Init Duration" not in log, "a provisioned instance was initialised before the invocation"
    time.sleep(1.5)  # past the idle timeout: provisioned instances are never reaped
    assert call(lam, name, "live")[0]["pid"] == body["pid"]

    # Traffic above the provisioned instances spills to on-demand ones.
    marker = tmp_path / "m"
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda i: call(lam, name, "live", sleep=1, marker=f"{marker}{i}")[0], range(3)))
    assert sorted(r["init"] for r in results) == ["on-demand", "provisioned-concurrency", "provisioned-concurrency"]

    listed = lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"]
    assert [c["FunctionArn"].rsplit(":", 1)[1] for c in listed] == ["live"]
    assert lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="live")[
        "ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    wait_for(lambda: call(lam, name, "live")[0]["init"] == "on-demand", timeout=10)


def test_provisioned_instance_logs_its_init(own_server):
    """A provisioned instance's INIT_START and module-level output go to its own log stream when it starts, as
    Lambda logs them; its invocations then report no init."""
    srv = own_server(FAAS_RUNTIME__PROVISION_INTERVAL=0.2)
    lam, logs = srv.client(), srv.client("logs")
    name, _ = create_function(lam, "print('warming up')\n" + PROBE, Publish=True)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1)
    wait_for(lambda: lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")["Status"] == "READY",
             timeout=30)
    events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]
    assert len(events) == 2 and events[0]["message"].startswith("INIT_START Runtime Version: python:3.11")
    assert events[1]["message"] == "warming up\n"
    _, log = call(lam, name, "live")
    assert "Init Duration" not in log and "warming up" not in log
    streams = logs.describe_log_streams(logGroupName=f"/aws/lambda/{name}")["logStreams"]
    assert len(streams) == 1, "the invocation ran on the provisioned instance, in the stream its init went to"


def test_provisioned_follows_alias_and_reports_init_failure(own_server):
    srv = own_server(FAAS_RUNTIME__PROVISION_INTERVAL=0.2)
    lam = srv.client()
    name, _ = create_function(lam, PROBE, Publish=True)
    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": PROBE + "\nVERSION = 2\n"}))
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1)
    wait_for(lambda: lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")["Status"] == "READY",
             timeout=30)
    first = call(lam, name, "live")[0]
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2")
    moved = wait_for(lambda: (b := call(lam, name, "live")[0])["init"] == "provisioned-concurrency"
                     and b["pid"] != first["pid"] and b, timeout=30)
    assert moved["pid"] != first["pid"]

    broken, _ = create_function(lam, "raise RuntimeError('no init')\n", Publish=True)
    lam.put_provisioned_concurrency_config(FunctionName=broken, Qualifier="1", ProvisionedConcurrentExecutions=1)
    failed = wait_for(lambda: (c := lam.get_provisioned_concurrency_config(FunctionName=broken, Qualifier="1"))
                      ["Status"] == "FAILED" and c, timeout=30)
    assert failed["StatusReason"] == "FUNCTION_ERROR_INIT_FAILURE"
    assert failed["AllocatedProvisionedConcurrentExecutions"] == 0


def test_memory_budget_evicts_least_recently_used(own_server, tmp_path):
    srv = own_server(FAAS_ACCOUNT__MEMORY_BUDGET_MB=256)
    lam = srv.client()
    a, _ = create_function(lam, PROBE)
    b, _ = create_function(lam, PROBE)
    c, _ = create_function(lam, PROBE)
    pid_a = call(lam, a)[0]["pid"]
    pid_b = call(lam, b)[0]["pid"]
    call(lam, a)  # b is now the least recently used
    call(lam, c)
    wait_for(lambda: not _alive(pid_b), timeout=10)
    assert _alive(pid_a)
    marker = tmp_path / "busy"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = [pool.submit(call, lam, n, sleep=2, marker=f"{marker}{n}") for n in (a, c)]
        wait_for(lambda: all((tmp_path / f"busy{n}").exists() for n in (a, c)), timeout=20)
        with pytest.raises(lam.exceptions.TooManyRequestsException) as exc:
            lam.invoke(FunctionName=b)
        assert throttle_of(exc)[0] == 429
        for r in running:
            r.result(timeout=30)


def _alive(pid: int) -> bool:
    try:
        return pid_state(pid) != "Z"
    except FileNotFoundError:
        return False


def test_idle_instances_are_frozen(lam):
    code = """
import os, threading, time
TICKS = [0]
def spin():
    while True:
        TICKS[0] += 1
        time.sleep(0.01)
threading.Thread(target=spin, daemon=True).start()
def handler(event, context):
    return {"pid": os.getpid(), "ticks": TICKS[0]}
"""
    name, _ = create_function(lam, code)
    first = call(lam, name)[0]
    wait_for(lambda: pid_state(first["pid"]) == "T", timeout=5)
    time.sleep(0.5)
    second = call(lam, name)[0]
    assert second["pid"] == first["pid"]
    assert second["ticks"] - first["ticks"] < 10, "a frozen instance's threads do not run between invocations"


def test_instances_run_under_sched_batch(lam, own_server):
    """By default an instance runs under SCHED_BATCH (woken, it does not preempt the server's event loop),
    forked and exec'd alike; runtime.batch_scheduling = false leaves the default policy."""
    code = "import os\ndef handler(event, context):\n    return os.sched_getscheduler(0)\n"
    name, _ = create_function(lam, code)
    assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == os.SCHED_BATCH
    # A start-up variable: this one's instances are exec'd, not forked.
    exec_name, _ = create_function(lam, code, Environment={"Variables": {"PYTHONHASHSEED": "1"}})
    assert json.loads(lam.invoke(FunctionName=exec_name)["Payload"].read()) == os.SCHED_BATCH
    plain = own_server(FAAS_RUNTIME__BATCH_SCHEDULING="false").client()
    name, _ = create_function(plain, code)
    assert json.loads(plain.invoke(FunctionName=name)["Payload"].read()) == os.SCHED_OTHER


def test_cold_starts_in_progress_are_capped(own_server):
    """With runtime.max_starting = 1, four concurrent first invocations start their instances one at a time
    (each init takes 0.3 s, so their starts are that far apart), and every invocation is still served."""
    srv = own_server(FAAS_RUNTIME__MAX_STARTING=1)
    lam = srv.client()
    code = (
        "import os, time\n"
        "STARTED = time.time()\n"
        "time.sleep(0.3)\n"
        "def handler(event, context):\n"
        "    time.sleep(1.0)\n"
        "    return {'pid': os.getpid(), 'started': STARTED}\n"
    )
    name, _ = create_function(lam, code)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = [json.loads(r["Payload"].read()) for r in pool.map(lambda _: lam.invoke(FunctionName=name), range(4))]
    starts = sorted({r["pid"]: r["started"] for r in results}.values())
    assert len(starts) >= 2
    assert all(b - a >= 0.25 for a, b in zip(starts, starts[1:])), starts


def test_max_lifetime_recycles(own_server):
    srv = own_server(FAAS_RUNTIME__MAX_LIFETIME=1)
    lam = srv.client()
    name, _ = create_function(lam, PROBE)
    pid = call(lam, name)[0]["pid"]
    time.sleep(1.2)
    assert call(lam, name)[0]["pid"] != pid


def test_scale_up_rate(own_server, tmp_path):
    srv = own_server(FAAS_RUNTIME__SCALE_BURST=2, FAAS_RUNTIME__SCALE_RATE=0.01)
    lam = srv.client()
    name, _ = create_function(lam, PROBE)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = [pool.submit(call, lam, name, sleep=2, marker=str(tmp_path / f"s{i}")) for i in range(2)]
        wait_for(lambda: all((tmp_path / f"s{i}").exists() for i in range(2)), timeout=20)
        with pytest.raises(lam.exceptions.TooManyRequestsException) as exc:
            lam.invoke(FunctionName=name)
        assert throttle_of(exc)[2] == "FunctionInvocationRateLimitExceeded"
        for r in running:
            r.result(timeout=30)
    assert call(lam, name)[0]["pid"] > 0, "warm instances need no new capacity"


def test_memory_limit_kills_and_replaces_instance(lam):
    code = """
import os
def handler(event, context):
    if event.get("grow"):
        hog = bytearray(300 * 1024 * 1024)
        hog[::4096] = b"x" * len(hog[::4096])
    return os.getpid()
"""
    name, _ = create_function(lam, code, MemorySize=128)
    pid = call(lam, name)[0]
    resp = lam.invoke(FunctionName=name, Payload=json.dumps({"grow": True}).encode(), LogType="Tail")
    body = json.loads(resp["Payload"].read())
    if body == pid:
        pytest.skip("memory cgroups are not available on this machine")
    assert resp["FunctionError"] == "Unhandled"
    assert body == {
        "errorType": "Runtime.OutOfMemory",
        "errorMessage": f"RequestId: {resp['ResponseMetadata']['RequestId']} Error: Runtime exited with error: "
                        "signal: killed",
    }
    assert call(lam, name)[0] != pid, "a new instance replaced the killed one"
