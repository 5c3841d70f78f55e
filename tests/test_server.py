"""The server as a process: readiness, configuration, restarts, signals, crashes, idle instances, throttling."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import sqlite3
import urllib.request

import pytest

from conftest import Server, create_function, wait_for

PID = "import os, time\ndef handler(event, context):\n    time.sleep(event.get('sleep', 0))\n    return os.getpid()\n"


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def invoke_pid(lam, name: str, sleep: float = 0) -> int:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps({"sleep": sleep}).encode())
    body = resp["Payload"].read()
    assert "FunctionError" not in resp, body
    return json.loads(body)


@pytest.fixture
def own_server(tmp_path):
    servers: list[Server] = []

    def start(**kwargs) -> Server:
        srv = Server(tmp_path / "data", **kwargs).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        if srv.proc:
            srv.stop(signal.SIGKILL)


def test_health(server):
    with urllib.request.urlopen(f"{server.url}/health") as resp:
        assert resp.status == 200
        assert json.loads(resp.read()) == {"status": "ok"}


def test_restart_keeps_functions_and_schema(own_server, tmp_path):
    srv = own_server()
    lam = srv.client()
    name, created = create_function(lam, PID, Description="kept")
    first_pid = invoke_pid(lam, name)
    assert srv.stop() == 0
    assert not pid_alive(first_pid), "workers stop with the server"
    srv.start()
    conf = lam.get_function_configuration(FunctionName=name)
    assert conf["Description"] == "kept" and conf["RevisionId"] == created["RevisionId"]
    assert conf["CodeSha256"] == created["CodeSha256"]
    assert invoke_pid(lam, name) != first_pid
    db = sqlite3.connect(tmp_path / "data" / "registry.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = [r[0] for r in db.execute("SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == sorted(set(versions)) and versions[0] == 1
    finally:
        db.close()


MARKED = ("import os, time\ndef handler(event, context):\n    open(event['marker'], 'w').close()\n"
          "    time.sleep(event['sleep'])\n    return os.getpid()\n")


def test_sigterm_waits_for_running_invocation(own_server, tmp_path):
    srv = own_server()
    lam = srv.client()
    name, _ = create_function(lam, MARKED)
    marker = tmp_path / "running"
    payload = json.dumps({"marker": str(marker), "sleep": 1.5}).encode()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(lambda: lam.invoke(FunctionName=name, Payload=payload)["Payload"].read())
        wait_for(marker.exists, timeout=20)
        srv.proc.send_signal(signal.SIGTERM)
        pid = json.loads(running.result(timeout=30))
    assert srv.proc.wait(30) == 0
    assert not pid_alive(pid)


def test_sigkill_loses_nothing_committed(own_server, tmp_path):
    srv = own_server()
    lam = srv.client()
    names = [create_function(lam, PID)[0] for _ in range(5)]
    worker = invoke_pid(lam, names[0])
    srv.stop(signal.SIGKILL)
    # Workers notice their server is gone (their channel closes) and exit on their own.
    wait_for(lambda: not pid_alive(worker), timeout=10)
    db = sqlite3.connect(tmp_path / "data" / "registry.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    srv.start()
    listed = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
    assert set(names) <= listed
    assert invoke_pid(lam, names[-1]) > 0


def test_config_file_and_environment(own_server, tmp_path):
    config = tmp_path / "faas.toml"
    config.write_text('[account]\nregion = "eu-west-1"\naccount_id = "123456789012"\n')
    srv = own_server(config=config, env={"FAAS_ACCOUNT__CONCURRENT_EXECUTIONS": "7"})
    lam = srv.client()
    lam.meta.config.region_name = "eu-west-1"
    name, created = create_function(lam, PID)
    assert created["FunctionArn"] == f"arn:aws:lambda:eu-west-1:123456789012:function:{name}"
    assert lam.get_account_settings()["AccountLimit"]["ConcurrentExecutions"] == 7


def test_idle_instances_stop(own_server):
    srv = own_server(env={"FAAS_RUNTIME__IDLE_TIMEOUT": "1", "FAAS_RUNTIME__REAP_INTERVAL": "0.2"})
    lam = srv.client()
    name, _ = create_function(lam, PID)
    pid = invoke_pid(lam, name)
    assert invoke_pid(lam, name) == pid
    wait_for(lambda: not pid_alive(pid), timeout=10)
    assert invoke_pid(lam, name) != pid


def test_account_concurrency_throttles(own_server, tmp_path):
    srv = own_server(env={"FAAS_ACCOUNT__CONCURRENT_EXECUTIONS": "1"})
    lam = srv.client()
    code = MARKED
    name, _ = create_function(lam, code)
    marker = tmp_path / "running"
    payload = json.dumps({"marker": str(marker), "sleep": 2}).encode()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(lambda: lam.invoke(FunctionName=name, Payload=payload)["Payload"].read())
        wait_for(marker.exists, timeout=20)
        with pytest.raises(lam.exceptions.TooManyRequestsException) as exc:
            lam.invoke(FunctionName=name, Payload=payload)
        err = exc.value.response
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert err["Error"]["Message"] == "Rate Exceeded."
        assert err["Reason"] == "ConcurrentInvocationLimitExceeded"
        assert int(running.result(timeout=30)) > 0
    marker.unlink()
    assert lam.invoke(FunctionName=name, Payload=json.dumps({"marker": str(marker), "sleep": 0}).encode())["StatusCode"] == 200


def test_update_retires_warm_instances(lam):
    name, _ = create_function(lam, PID)
    pid = invoke_pid(lam, name)
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"CHANGED": "1"}})
    wait_for(lambda: not pid_alive(pid), timeout=10)
    assert invoke_pid(lam, name) != pid
