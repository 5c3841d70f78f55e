"""Application Auto Scaling of provisioned concurrency: the API through boto3's `application-autoscaling` client
against the real server, target tracking under real load, scheduled actions, activities and restarts; and the
scaler's decisions (cooldowns, bounds, not scaled activities) pass by pass with a synthetic clock."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from botocore.exceptions import ClientError

from conftest import Server, create_function, wait_for
from faas.invoke.provisioning import Status, check_provisioned
from faas.services.autoscaling import Autoscaler, Schedule
from faas.store.autoscaling import Alarm, AutoscalingStore, ScalableTarget, ScalingPolicy, TargetKey, TargetTracking
from faas.store.code import CodePackage
from faas.store.db import Database
from faas.store.provisioned import ConcurrencySettings
from faas.store.records import FunctionConfig
from faas.store.registry import Registry

NS = "lambda"
DIM = "lambda:function:ProvisionedConcurrency"
METRIC = "LambdaProvisionedConcurrencyUtilization"
SLEEPER = """
import time
def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return "ok"
"""
# Passes every 0.2 s, utilization sampled every 0.05 s and averaged over 1 s.
FAST = {
    "FAAS_AUTOSCALING__INTERVAL": "0.2",
    "FAAS_AUTOSCALING__SAMPLE_INTERVAL": "0.05",
    "FAAS_AUTOSCALING__WINDOW": "1.0",
    "FAAS_RUNTIME__PROVISION_INTERVAL": "0.2",
}


def error(exc) -> tuple[str, str]:
    return exc.value.response["Error"]["Code"], exc.value.response["Error"]["Message"]


def target_args(name: str, qualifier: str = "live") -> dict:
    return {"ServiceNamespace": NS, "ScalableDimension": DIM, "ResourceId": f"function:{name}:{qualifier}"}


def tracking(value: float = 0.5, **extra) -> dict:
    return {"TargetValue": value, "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC}, **extra}


def requested(lam, name: str, qualifier: str = "live") -> int:
    try:
        return lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)[
            "RequestedProvisionedConcurrentExecutions"]
    except lam.exceptions.ProvisionedConcurrencyConfigNotFoundException:
        return 0


def activities(aas, name: str, **kwargs) -> list[dict]:
    return aas.describe_scaling_activities(ServiceNamespace=NS, ResourceId=f"function:{name}:live", **kwargs)[
        "ScalingActivities"]


def published(lam) -> str:
    name, _ = create_function(lam, SLEEPER, Publish=True)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    return name


@pytest.fixture
def fast_server(tmp_path):
    servers: list[Server] = []

    def start() -> Server:
        srv = Server(tmp_path / "data", env=FAST).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        if srv.proc and srv.proc.poll() is None:
            srv.stop()


def raw_call(server: Server, operation: str, body: dict) -> tuple[int, dict, dict]:
    req = urllib.request.Request(server.url + "/", data=json.dumps(body).encode(), method="POST", headers={
        "X-Amz-Target": f"AnyScaleFrontendService.{operation}", "Content-Type": "application/x-amz-json-1.1"})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), json.loads(err.read())


# -- the API ------------------------------------------------------------------------------------------


def test_register_describe_deregister(server, lam):
    aas = server.client("application-autoscaling")
    name = published(lam)
    arn = aas.register_scalable_target(**target_args(name), MinCapacity=0, MaxCapacity=3)["ScalableTargetARN"]
    assert re.fullmatch(r"arn:aws:application-autoscaling:us-east-1:000000000000:scalable-target/[0-9a-f]{36}", arn)
    [target] = aas.describe_scalable_targets(ServiceNamespace=NS, ResourceIds=[f"function:{name}:live"])[
        "ScalableTargets"]
    assert target["ScalableTargetARN"] == arn and (target["MinCapacity"], target["MaxCapacity"]) == (0, 3)
    assert target["RoleARN"].endswith("AWSServiceRoleForApplicationAutoScaling_LambdaConcurrency")
    assert target["SuspendedState"] == {"DynamicScalingInSuspended": False, "DynamicScalingOutSuspended": False,
                                        "ScheduledScalingSuspended": False}
    assert abs(target["CreationTime"].timestamp() - time.time()) < 60
    assert requested(lam, name) == 0, "MinCapacity 0 asks for no provisioned concurrency"

    # Updating keeps what the call leaves out.
    assert aas.register_scalable_target(**target_args(name), MaxCapacity=5,
                                        SuspendedState={"ScheduledScalingSuspended": True})["ScalableTargetARN"] == arn
    [target] = aas.describe_scalable_targets(ServiceNamespace=NS, ScalableDimension=DIM,
                                             ResourceIds=[f"function:{name}:live"])["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 5)
    assert target["SuspendedState"]["ScheduledScalingSuspended"] is True

    # Pages.
    aas.register_scalable_target(**target_args(name, "1"), MinCapacity=0, MaxCapacity=1)
    ids = [f"function:{name}:live", f"function:{name}:1"]
    first = aas.describe_scalable_targets(ServiceNamespace=NS, ResourceIds=ids, MaxResults=1)
    second = aas.describe_scalable_targets(ServiceNamespace=NS, ResourceIds=ids, NextToken=first["NextToken"])
    assert [t["ResourceId"] for t in first["ScalableTargets"] + second["ScalableTargets"]] == ids
    assert "NextToken" not in second
    with pytest.raises(ClientError) as exc:
        aas.describe_scalable_targets(ServiceNamespace=NS, NextToken="not-a-token")
    assert error(exc)[0] == "InvalidNextTokenException"

    aas.put_scaling_policy(PolicyName="p", **target_args(name), PolicyType="TargetTrackingScaling",
                           TargetTrackingScalingPolicyConfiguration=tracking())
    aas.deregister_scalable_target(**target_args(name))
    aas.deregister_scalable_target(**target_args(name, "1"))
    assert aas.describe_scalable_targets(ServiceNamespace=NS, ResourceIds=ids)["ScalableTargets"] == []
    assert aas.describe_scaling_policies(ServiceNamespace=NS, ResourceId=ids[0])["ScalingPolicies"] == [], \
        "a target's policies go with it"
    with pytest.raises(ClientError) as exc:
        aas.deregister_scalable_target(**target_args(name))
    assert error(exc) == ("ObjectNotFoundException", f"No scalable target found for service namespace: lambda, "
                          f"resource ID: function:{name}:live, scalable dimension: {DIM}")


def test_register_errors(server, lam):
    aas = server.client("application-autoscaling")
    name = published(lam)

    def refused(**args) -> tuple[str, str]:
        with pytest.raises(ClientError) as exc:
            aas.register_scalable_target(**{**target_args(name), "MinCapacity": 1, "MaxCapacity": 2, **args})
        return error(exc)

    code, message = refused(ServiceNamespace="ecs", ResourceId="service/default/web",
                            ScalableDimension="ecs:service:DesiredCount")
    assert code == "ValidationException" and "Service namespace 'ecs' is not supported" in message
    assert refused(ScalableDimension="ecs:service:DesiredCount") == (
        "ValidationException", "Unsupported service namespace, resource type or scalable dimension")
    code, message = refused(ServiceNamespace="nope")
    assert code == "ValidationException" and message.startswith(
        "1 validation error detected: Value 'nope' at 'serviceNamespace' failed to satisfy constraint: "
        "Member must satisfy enum value set:")
    assert "function:<function-name>:<alias-or-version>" in refused(ResourceId=f"function:{name}")[1]
    assert "not $LATEST" in refused(ResourceId=f"function:{name}:$LATEST")[1]
    code, message = refused(ResourceId=f"function:{name}:nope")
    assert code == "ValidationException" and f"function:{name}:nope does not exist" in message
    assert refused(MinCapacity=3, MaxCapacity=2) == (
        "ValidationException", "Minimum capacity (3) cannot be greater than maximum capacity (2).")
    with pytest.raises(ClientError) as exc:
        aas.register_scalable_target(**target_args(name), MinCapacity=1)
    assert error(exc) == ("ValidationException",
                          "MinCapacity and MaxCapacity are required to register a new scalable target.")
    with pytest.raises(ClientError) as exc:
        aas.describe_scalable_targets(ServiceNamespace="dynamodb")
    assert error(exc)[0] == "ValidationException"
    with pytest.raises(ClientError) as exc:
        aas.describe_scalable_targets(ServiceNamespace=NS, MaxResults=51)
    assert error(exc)[1].endswith("Member must have value less than or equal to 50")


def test_error_wire_format(server):
    missing = {**target_args("nope-missing"), "PolicyName": "p"}
    for operation, body, code in [
        ("DeleteScalingPolicy", missing, "ObjectNotFoundException"),
        ("DescribeScalableTargets", {"ServiceNamespace": "ecs"}, "ValidationException"),
        ("DescribeScalableTargets", {"ServiceNamespace": NS, "NextToken": "%%"}, "InvalidNextTokenException"),
    ]:
        status, headers, doc = raw_call(server, operation, body)
        assert (status, headers["x-amzn-ErrorType"], doc["__type"]) == (400, code, code)
        assert set(doc) == {"__type", "message"} and doc["message"]
    status, _, doc = raw_call(server, "DescribeScalableTargets", {"ServiceNamespace": NS, "ResourceIds": ["x"]})
    assert (status, doc) == (200, {"ScalableTargets": []})


def test_policies_and_scheduled_actions(server, lam):
    aas = server.client("application-autoscaling")
    name = published(lam)
    resource = f"function:{name}:live"
    with pytest.raises(ClientError) as exc:
        aas.put_scaling_policy(PolicyName="p", **target_args(name), PolicyType="TargetTrackingScaling",
                               TargetTrackingScalingPolicyConfiguration=tracking())
    assert error(exc) == ("ObjectNotFoundException", f"No scalable target registered for service namespace: lambda, "
                          f"resource ID: {resource}, scalable dimension: {DIM}")
    aas.register_scalable_target(**target_args(name), MinCapacity=0, MaxCapacity=4)

    def policy_refused(**args) -> tuple[str, str]:
        with pytest.raises(ClientError) as exc:
            aas.put_scaling_policy(**{"PolicyName": "p", **target_args(name), **args})
        return error(exc)

    assert "PolicyType StepScaling is not supported" in policy_refused(
        StepScalingPolicyConfiguration={"AdjustmentType": "ChangeInCapacity"})[1]
    assert "Unsupported metric type DynamoDBReadCapacityUtilization" in policy_refused(
        PolicyType="TargetTrackingScaling", TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 0.5, "PredefinedMetricSpecification": {"PredefinedMetricType":
                                                                 "DynamoDBReadCapacityUtilization"}})[1]
    assert "TargetValue 70.0 is out of range" in policy_refused(
        PolicyType="TargetTrackingScaling", TargetTrackingScalingPolicyConfiguration=tracking(70))[1]

    put = aas.put_scaling_policy(PolicyName="half", **target_args(name), PolicyType="TargetTrackingScaling",
                                 TargetTrackingScalingPolicyConfiguration=tracking(0.5, ScaleInCooldown=120))
    assert re.fullmatch(rf"arn:aws:autoscaling:us-east-1:000000000000:scalingPolicy:[0-9a-f-]{{36}}:resource/lambda/"
                        rf"{resource}:policyName/half", put["PolicyARN"])
    assert [a["AlarmName"].split("-Alarm")[1].split("-")[0] for a in put["Alarms"]] == ["High", "Low"]
    assert put["Alarms"][0]["AlarmName"].startswith(f"TargetTracking-{resource}-AlarmHigh-")
    again = aas.put_scaling_policy(PolicyName="half", **target_args(name), PolicyType="TargetTrackingScaling",
                                   TargetTrackingScalingPolicyConfiguration=tracking(0.6, DisableScaleIn=True))
    assert again["PolicyARN"] == put["PolicyARN"], "an update keeps the policy's ARN"
    [policy] = aas.describe_scaling_policies(ServiceNamespace=NS, ResourceId=resource, PolicyNames=["half"])[
        "ScalingPolicies"]
    assert policy["PolicyType"] == "TargetTrackingScaling" and policy["Alarms"] == put["Alarms"]
    assert policy["TargetTrackingScalingPolicyConfiguration"] == tracking(0.6, DisableScaleIn=True)
    aas.delete_scaling_policy(PolicyName="half", **target_args(name))
    with pytest.raises(ClientError) as exc:
        aas.delete_scaling_policy(PolicyName="half", **target_args(name))
    assert error(exc) == ("ObjectNotFoundException", f"No scaling policy found for service namespace: lambda, "
                          f"resource ID: {resource}, scalable dimension: {DIM}, policy name: half")

    for schedule in ("cron(0 9 * * *)", "cron(0 9 * * MON-FRI *)", "rate(0 minutes)", "at(2030-02-30T10:00:00)",
                     "every day"):
        with pytest.raises(ClientError) as exc:
            aas.put_scheduled_action(ScheduledActionName="s", Schedule=schedule, **target_args(name),
                                     ScalableTargetAction={"MinCapacity": 1})
        assert error(exc)[0] == "ValidationException", schedule
    with pytest.raises(ClientError) as exc:
        aas.put_scheduled_action(ScheduledActionName="s", Schedule="cron(0 9 ? * MON-FRI *)", Timezone="Mars/Base",
                                 **target_args(name))
    assert error(exc) == ("ValidationException", "Timezone 'Mars/Base' is not a valid IANA time zone")
    aas.put_scheduled_action(ScheduledActionName="weekdays", Schedule="cron(0 9 ? * MON-FRI *)",
                             Timezone="Europe/Paris", **target_args(name),
                             ScalableTargetAction={"MinCapacity": 2, "MaxCapacity": 4})
    [action] = aas.describe_scheduled_actions(ServiceNamespace=NS, ResourceId=resource)["ScheduledActions"]
    assert action["Schedule"] == "cron(0 9 ? * MON-FRI *)" and action["Timezone"] == "Europe/Paris"
    assert action["ScalableTargetAction"] == {"MinCapacity": 2, "MaxCapacity": 4}
    assert re.fullmatch(rf"arn:aws:autoscaling:us-east-1:000000000000:scheduledAction:[0-9a-f-]{{36}}:resource/"
                        rf"lambda/{resource}:scheduledActionName/weekdays", action["ScheduledActionARN"])
    aas.delete_scheduled_action(ScheduledActionName="weekdays", **target_args(name))
    with pytest.raises(ClientError) as exc:
        aas.delete_scheduled_action(ScheduledActionName="weekdays", **target_args(name))
    assert error(exc) == ("ObjectNotFoundException", f"No scheduled action found for service namespace: lambda, "
                          f"resource ID: {resource}, scalable dimension: {DIM}, scheduled action name: weekdays")


# -- the scaler on a real server ------------------------------------------------------------------------


def test_target_tracking_follows_load(fast_server):
    srv = fast_server()
    lam, aas = srv.client(), srv.client("application-autoscaling")
    name = published(lam)
    aas.register_scalable_target(**target_args(name), MinCapacity=1, MaxCapacity=4)
    assert requested(lam, name) == 1, "registering enforces MinCapacity at once"
    aas.put_scaling_policy(PolicyName="half", **target_args(name), PolicyType="TargetTrackingScaling",
                           TargetTrackingScalingPolicyConfiguration=tracking(0.5, ScaleInCooldown=1))

    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            resp = lam.invoke(FunctionName=name, Qualifier="live", Payload=json.dumps({"sleep": 0.3}).encode())
            assert "FunctionError" not in resp

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        # Every busy provisioned instance: utilization 1.0 against a target of 0.5 doubles capacity, 1 -> 2 -> 4.
        wait_for(lambda: requested(lam, name) == 4, timeout=20)
        # Held at MaxCapacity while utilization still asks for more: a not scaled activity says so.
        wait_for(lambda: any(a.get("NotScaledReasons", [{}])[0].get("Code") == "AlreadyAtMaxCapacity"
                             for a in activities(aas, name, IncludeNotScaledActivities=True)), timeout=10)
    finally:
        stop.set()
        for t in threads:
            t.join()
    # Deadlines, not sleeps: generous, since a loaded CI machine slows provisioning.
    wait_for(lambda: requested(lam, name) == 1, timeout=30)
    wait_for(lambda: all(a["StatusCode"] == "Successful" for a in activities(aas, name)), timeout=30)

    history = activities(aas, name)[::-1]
    steps = [int(re.fullmatch(r"Setting desired concurrency to (\d+)\.", a["Description"])[1]) for a in history]
    peak = steps.index(4)
    assert steps[0] == 1 and steps[-1] == 1, steps
    assert steps[:peak + 1] == sorted(set(steps[:peak + 1])) and steps[peak:] == sorted(set(steps[peak:]))[::-1], \
        f"up to 4 under load, then down to 1: {steps}"
    assert history[0]["Cause"] == "minimum capacity was set to 1"
    high = rf"monitor alarm TargetTracking-function:{name}:live-AlarmHigh-[0-9a-f-]{{36}} in state ALARM"
    low = high.replace("High", "Low")
    assert all(re.fullmatch(high + " triggered policy half", a["Cause"]) for a in history[1:peak + 1])
    assert all(re.fullmatch(low + " triggered policy half", a["Cause"]) for a in history[peak + 1:])
    assert history[peak]["StatusMessage"] == ("Successfully set desired concurrency to 4. Change successfully "
                                              "fulfilled by lambda.")
    assert all(a["EndTime"] >= a["StartTime"] for a in history)
    assert not any("NotScaledReasons" in a for a in history), "not scaled activities only when asked for"
    [at_max] = [a for a in activities(aas, name, IncludeNotScaledActivities=True)
                if a.get("NotScaledReasons", [{}])[0].get("Code") == "AlreadyAtMaxCapacity"]
    assert at_max["StatusCode"] == "Failed" and re.fullmatch(high + " triggered policy half", at_max["Cause"])
    assert at_max["NotScaledReasons"] == [{"Code": "AlreadyAtMaxCapacity", "MaxCapacity": 4, "CurrentCapacity": 4}]


def test_scheduled_actions_and_restart(fast_server):
    srv = fast_server()
    lam, aas = srv.client(), srv.client("application-autoscaling")
    name = published(lam)
    aas.register_scalable_target(**target_args(name), MinCapacity=0, MaxCapacity=5)
    aas.put_scaling_policy(PolicyName="kept", **target_args(name), PolicyType="TargetTrackingScaling",
                           TargetTrackingScalingPolicyConfiguration=tracking(0.7, DisableScaleIn=True))
    # at() in the action's time zone: two seconds from now, written as Tokyo's wall-clock time.
    soon = (datetime.now(ZoneInfo("Asia/Tokyo")) + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S")
    aas.put_scheduled_action(ScheduledActionName="morning", Schedule=f"at({soon})", Timezone="Asia/Tokyo",
                             **target_args(name), ScalableTargetAction={"MinCapacity": 2})
    # rate() with a StartTime runs at the start time, then every hour.
    aas.put_scheduled_action(ScheduledActionName="shrink", Schedule="rate(1 hour)", **target_args(name),
                             StartTime=datetime.now(timezone.utc) + timedelta(seconds=5),
                             ScalableTargetAction={"MinCapacity": 1, "MaxCapacity": 1})
    aas.put_scheduled_action(ScheduledActionName="never", Schedule="cron(0 0 1 1 ? 2099)", **target_args(name),
                             ScalableTargetAction={"MaxCapacity": 9})

    def bounds() -> tuple[int, int]:
        [t] = aas.describe_scalable_targets(ServiceNamespace=NS)["ScalableTargets"]
        return t["MinCapacity"], t["MaxCapacity"]

    wait_for(lambda: bounds() == (2, 5) and requested(lam, name) == 2, timeout=10)
    wait_for(lambda: bounds() == (1, 1) and requested(lam, name) == 1, timeout=10)
    wait_for(lambda: all(a["StatusCode"] == "Successful" for a in activities(aas, name)), timeout=15)
    history = [(a["Description"], a["Cause"]) for a in activities(aas, name)[::-1]]
    assert history == [
        ("Setting min capacity to 2 and max capacity to 5", "scheduled action name morning was triggered"),
        ("Setting desired concurrency to 2.", "minimum capacity was set to 2"),
        ("Setting min capacity to 1 and max capacity to 1", "scheduled action name shrink was triggered"),
        ("Setting desired concurrency to 1.", "maximum capacity was set to 1"),
    ]

    def state() -> tuple:
        return (aas.describe_scalable_targets(ServiceNamespace=NS)["ScalableTargets"],
                aas.describe_scaling_policies(ServiceNamespace=NS)["ScalingPolicies"],
                aas.describe_scheduled_actions(ServiceNamespace=NS)["ScheduledActions"],
                activities(aas, name))

    before = state()
    assert srv.stop() == 0
    srv.start()
    assert state() == before
    assert requested(lam, name) == 1
    time.sleep(1.5)  # several passes: nothing already carried out runs again
    assert state() == before


# -- the scaler pass by pass ----------------------------------------------------------------------------


class FakePools:
    def __init__(self) -> None:
        self.allocated = 0
        self.busy = 0
        self.reserved: dict[str, int] = {}

    def provisioned_count(self, name: str, qualifier: str) -> int:
        return self.allocated

    def provisioned_busy(self, name: str, qualifier: str) -> int:
        return min(self.busy, self.allocated)

    def unreserved_limit(self) -> int:
        return 1000

    async def unprovision(self, name: str, qualifier: str) -> None:
        self.allocated = 0


class InstantProvisioner:
    """Provisions at once: the requested instances are READY when the next pass looks."""

    def __init__(self, pools: FakePools, registry: Registry, settings: ConcurrencySettings) -> None:
        self.pools = pools
        self.registry = registry
        self.settings = settings

    async def check(self, name: str, qualifier: str, value: int, minimum_unreserved: int) -> None:
        await check_provisioned(self.registry, self.settings, self.pools, name, qualifier, value, minimum_unreserved)

    def changed(self, name: str, qualifier: str, requested: int | None) -> None:
        self.pools.allocated = requested or 0

    def status(self, name: str, qualifier: str) -> Status:
        return Status("READY", None, self.pools.allocated)


@pytest.fixture
async def scaler(tmp_path):
    db = Database(tmp_path / "registry.db")
    await db.open()
    registry = Registry(db)
    await registry.create_function("fn", FunctionConfig(role="r"), CodePackage("0" * 64, 1, 1), {}, "Active")
    await registry.publish_version("fn", description=None, code_sha256_b64=None, revision_id=None)
    pools = FakePools()
    autoscaler = Autoscaler(AutoscalingStore(db), registry, ConcurrencySettings(db),
                            InstantProvisioner(pools, registry, ConcurrencySettings(db)),
                            pools, minimum_unreserved=100, interval=1, sample_interval=1, window=10)
    yield autoscaler, pools
    await autoscaler.close()
    await db.close()


T0 = 1_700_000_000.0
KEY = TargetKey(NS, "function:fn:1", DIM)


async def run(autoscaler: Autoscaler, start: float, end: float) -> None:
    t = start
    while t <= end:
        await autoscaler.run_once(T0 + t)
        t += 1


async def test_cooldowns_bounds_and_not_scaled(scaler):
    autoscaler, pools = scaler
    store = autoscaler.store
    target = ScalableTarget(KEY, "fn", "1", "arn", 1, 6, "role", T0)
    await store.put_target(target)
    autoscaler.watch(target, T0)
    await autoscaler.enforce_bounds(target, T0)
    alarms = [Alarm("TargetTracking-x-AlarmHigh-1", "a1"), Alarm("TargetTracking-x-AlarmLow-1", "a2")]
    await store.put_policy(ScalingPolicy(KEY, "p", "arn", "TargetTrackingScaling",
                                         TargetTracking(0.5, METRIC, scale_out_cooldown=30, scale_in_cooldown=60),
                                         alarms, T0))
    pools.busy = 10

    await run(autoscaler, 0, 9)
    assert await autoscaler.capacity("fn", "1") == 1, "no decision before a whole window is sampled"
    await run(autoscaler, 10, 10)
    assert await autoscaler.capacity("fn", "1") == 2
    await run(autoscaler, 11, 39)
    assert await autoscaler.capacity("fn", "1") == 2, "scale-out cooldown of 30 s"
    await run(autoscaler, 40, 40)
    assert await autoscaler.capacity("fn", "1") == 4
    await run(autoscaler, 41, 80)
    assert await autoscaler.capacity("fn", "1") == 6, "clamped to MaxCapacity"

    pools.busy = 0
    await run(autoscaler, 81, 129)
    assert await autoscaler.capacity("fn", "1") == 6, "scale-in waits 60 s after the last scaling activity"
    await run(autoscaler, 130, 130)
    assert await autoscaler.capacity("fn", "1") == 1, "all the way down to MinCapacity"
    await run(autoscaler, 131, 140)

    done = await store.activities(NS, KEY.resource_id, DIM, include_not_scaled=True, offset=0, limit=50)
    assert [(a.description, a.status_code) for a in done[::-1]] == [
        ("Setting desired concurrency to 1.", "Successful"),
        ("Setting desired concurrency to 2.", "Successful"),
        ("Setting desired concurrency to 4.", "Successful"),
        ("Setting desired concurrency to 6.", "Successful"),
        ("Attempting to scale due to alarm triggered", "Failed"),
        ("Setting desired concurrency to 1.", "Successful"),
        ("Attempting to scale due to alarm triggered", "Failed"),
    ]
    assert [r.code for a in done[::-1] if a.not_scaled for r in a.not_scaled] == [
        "AlreadyAtMaxCapacity", "AlreadyAtMinCapacity"]
    assert done[1].cause == "monitor alarm TargetTracking-x-AlarmLow-1 in state ALARM triggered policy p"


async def test_disable_scale_in_and_suspension(scaler):
    autoscaler, pools = scaler
    store = autoscaler.store
    target = ScalableTarget(KEY, "fn", "1", "arn", 2, 8, "role", T0, suspend_out=True)
    await store.put_target(target)
    await autoscaler.enforce_bounds(target, T0)
    await store.put_policy(ScalingPolicy(KEY, "p", "arn", "TargetTrackingScaling",
                                         TargetTracking(0.5, METRIC, disable_scale_in=True),
                                         [Alarm("TargetTracking-x-AlarmHigh-1", "a")], T0))
    pools.busy = 100
    await run(autoscaler, 0, 20)
    assert await autoscaler.capacity("fn", "1") == 2, "DynamicScalingOutSuspended"
    await store.put_target(ScalableTarget(KEY, "fn", "1", "arn", 2, 8, "role", T0))
    await run(autoscaler, 21, 40)
    assert await autoscaler.capacity("fn", "1") == 8
    pools.busy = 0
    await run(autoscaler, 41, 80)
    assert await autoscaler.capacity("fn", "1") == 8, "DisableScaleIn"


@pytest.mark.parametrize("expression, tz, after, now, expected", [
    # AWS numbers days 1-7 from Sunday: 2 is Monday. 2024-01-01 is a Monday.
    ("cron(30 9 ? * 2 *)", None, "2023-12-31T00:00", "2024-01-02T00:00", "2024-01-01T09:30"),
    ("cron(30 9 ? * MON-FRI *)", "America/New_York", "2024-01-01T00:00", "2024-01-01T23:00", "2024-01-01T14:30"),
    ("cron(0 18 ? * 6L *)", None, "2024-01-01T00:00", "2024-02-01T00:00", "2024-01-26T18:00"),  # last Friday
    ("cron(0 12 ? * 2#2 *)", None, "2024-01-01T00:00", "2024-02-01T00:00", "2024-01-08T12:00"),  # 2nd Monday
    ("cron(0 0 1 1 ? 2030)", None, "2024-01-01T00:00", "2024-02-01T00:00", None),
    ("rate(2 hours)", None, "2024-01-01T00:00", "2024-01-01T05:00", "2024-01-01T04:00"),
    ("at(2024-01-01T10:00:00)", "Asia/Tokyo", "2024-01-01T00:00", "2024-01-01T05:00", "2024-01-01T01:00"),
    ("at(2024-01-01T10:00:00)", None, "2024-01-01T00:00", "2024-01-01T05:00", None),
])
def test_schedule_expressions(expression, tz, after, now, expected):
    def epoch(text: str) -> float:
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()

    schedule = Schedule(expression, tz, None, None, anchor=epoch("2024-01-01T00:00"))
    found = schedule.latest(epoch(after), epoch(now))
    assert found == (epoch(expected) if expected else None)


def test_schedule_window():
    start = datetime(2024, 1, 1, 0, 30, tzinfo=timezone.utc).timestamp()
    end = datetime(2024, 1, 1, 3, 0, tzinfo=timezone.utc).timestamp()
    schedule = Schedule("rate(1 hour)", None, start, end, anchor=0)
    assert schedule.latest(0, start - 1) is None
    assert schedule.latest(0, start) == start
    assert schedule.latest(0, end + 7200) == start + 2 * 3600, "nothing after the end time"
