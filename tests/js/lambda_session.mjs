// One session of the AWS SDK for JavaScript v3 against a faas server (driven by tests/test_js_sdk.py).
//
//   node lambda_session.mjs ENDPOINT_URL ECHO_FUNCTION FAILING_FUNCTION
//
// Every call goes through one LambdaClient on one keep-alive HTTP agent, in order; the results are printed as
// one JSON object on stdout. An unexpected exception exits non-zero (its stack on stderr).
//
// The SDK is loaded from the node_modules next to this file, or from $FAAS_JS_SDK_DIR/node_modules when that
// is set (an ES module's bare imports ignore NODE_PATH, so it is resolved with createRequire instead).

import http from "node:http";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const sdkDir = process.env.FAAS_JS_SDK_DIR || path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(path.resolve(sdkDir), "package.json"));
const {
  LambdaClient, InvokeCommand, GetFunctionCommand, ListFunctionsCommand,
} = require("@aws-sdk/client-lambda");

const [endpoint, echoName, failName] = process.argv.slice(2);
if (!endpoint || !echoName || !failName) {
  console.error("usage: node lambda_session.mjs ENDPOINT_URL ECHO_FUNCTION FAILING_FUNCTION");
  process.exit(2);
}

// Node's own agent with keep-alive (as the SDK's default one), counting the TCP connections it opens.
const agent = new http.Agent({ keepAlive: true, maxSockets: 50 });
let connections = 0;
const createConnection = agent.createConnection.bind(agent);
agent.createConnection = (...args) => {
  connections += 1;
  return createConnection(...args);
};

const client = new LambdaClient({
  region: "us-east-1",
  endpoint,
  credentials: { accessKeyId: "test", secretAccessKey: "test" },
  maxAttempts: 1,
  requestHandler: { httpAgent: agent, requestTimeout: 60000 },
});

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const payload = (value) => encoder.encode(JSON.stringify(value));
const text = (bytes) => {
  if (bytes === undefined || bytes === null) return null;
  if (typeof bytes === "string") return bytes;
  return decoder.decode(bytes);
};

const result = {};

// RequestResponse with a small JSON payload.
let resp = await client.send(new InvokeCommand({ FunctionName: echoName, Payload: payload({ hello: "js", n: 1 }) }));
result.invoke = {
  statusCode: resp.StatusCode,
  httpStatusCode: resp.$metadata.httpStatusCode,
  executedVersion: resp.ExecutedVersion ?? null,
  functionError: resp.FunctionError ?? null,
  payload: text(resp.Payload),
  logResult: resp.LogResult ?? null,
};

// The same with LogType Tail: the last 4 KB of the log, base64.
resp = await client.send(new InvokeCommand({
  FunctionName: echoName, Payload: payload({ hello: "tail" }), LogType: "Tail",
}));
const log = resp.LogResult ? Buffer.from(resp.LogResult, "base64").toString("utf8") : "";
result.tail = {
  statusCode: resp.StatusCode,
  payload: text(resp.Payload),
  logResultPresent: typeof resp.LogResult === "string" && resp.LogResult.length > 0,
  logHasStart: log.includes("START RequestId"),
  logHasEnd: log.includes("END RequestId"),
  logHasReport: log.includes("REPORT RequestId"),
  requestId: resp.$metadata.requestId ?? null,
  logHasRequestId: Boolean(resp.$metadata.requestId) && log.includes(resp.$metadata.requestId),
  log,
};

// Event: queued, 202 and no payload (the SDK leaves Payload unset for an empty body).
resp = await client.send(new InvokeCommand({
  FunctionName: echoName, Payload: payload({ hello: "event" }), InvocationType: "Event",
}));
result.event = {
  statusCode: resp.StatusCode,
  httpStatusCode: resp.$metadata.httpStatusCode,
  payload: text(resp.Payload) ?? "",
};

// DryRun: 204.
resp = await client.send(new InvokeCommand({ FunctionName: echoName, InvocationType: "DryRun" }));
result.dryRun = { statusCode: resp.StatusCode, httpStatusCode: resp.$metadata.httpStatusCode };

// A function that raises: still a 200, with FunctionError and the error document as the payload.
resp = await client.send(new InvokeCommand({ FunctionName: failName, Payload: payload({ why: "because" }) }));
result.failing = {
  statusCode: resp.StatusCode,
  functionError: resp.FunctionError ?? null,
  payload: text(resp.Payload),
};

// A function that does not exist: the SDK's modeled exception.
try {
  await client.send(new InvokeCommand({ FunctionName: `${echoName}-missing`, Payload: payload({}) }));
  result.missing = { thrown: false };
} catch (err) {
  result.missing = {
    thrown: true,
    name: err.name,
    httpStatusCode: err.$metadata?.httpStatusCode ?? null,
    fault: err.$fault ?? null,
    message: err.message,
    type: err.Type ?? null,
  };
}

// 50 sequential Invokes on the same client (and so, with keep-alive, the same connection).
const seen = [];
let succeeded = 0;
for (let n = 0; n < 50; n += 1) {
  resp = await client.send(new InvokeCommand({ FunctionName: echoName, Payload: payload({ n }) }));
  const body = JSON.parse(text(resp.Payload));
  if (resp.StatusCode === 200 && !resp.FunctionError && body.echo?.n === n) succeeded += 1;
  seen.push(body.echo?.n ?? null);
}
result.sequential = { count: 50, succeeded, inOrder: seen.every((v, i) => v === i) };
result.connectionsBeforeOtherOperations = connections;

// Other operations (which the server's aiohttp side answers).
resp = await client.send(new GetFunctionCommand({ FunctionName: echoName }));
result.getFunction = {
  functionName: resp.Configuration?.FunctionName ?? null,
  runtime: resp.Configuration?.Runtime ?? null,
  handler: resp.Configuration?.Handler ?? null,
  codeLocationPresent: Boolean(resp.Code?.Location),
};

const names = [];
let marker;
do {
  resp = await client.send(new ListFunctionsCommand({ Marker: marker }));
  for (const fn of resp.Functions ?? []) names.push(fn.FunctionName);
  marker = resp.NextMarker;
} while (marker);
result.listFunctions = {
  count: names.length,
  hasEcho: names.includes(echoName),
  hasFailing: names.includes(failName),
};

// And an Invoke again after them, on the same client.
resp = await client.send(new InvokeCommand({ FunctionName: echoName, Payload: payload({ last: true }) }));
result.afterOtherOperations = { statusCode: resp.StatusCode, payload: text(resp.Payload) };

result.connections = connections;
client.destroy();
agent.destroy();
process.stdout.write(JSON.stringify(result) + "\n");
