// Runs inside a Node.js function's worker process: loads the handler, then serves invocations.
//
// Standalone on purpose: Node's standard library only, nothing from `faas`, valid on Node 18 to 24,
// because it runs under whichever `node` the function's runtime names. It is the twin of
// python_bootstrap.py and speaks the same protocol; what it does for the function's code follows AWS's
// Node.js runtime (handler lookup, error shapes, context object, console format, callback semantics).
//
// Started as `node node_bootstrap.mjs` with cwd = the code directory, fd 1 and fd 2 on one log pipe and
// the frames on the fds named by `_FAAS_FD_IN` / `_FAAS_FD_OUT` (3 and 4 when unset; in practice one
// socket, the same number in both). Frames are compact JSON, one per line:
//
//   worker -> server  {"t":"ready","init_ms":F} | {"t":"init_error","error":{...}}   (then exit)
//   server -> worker  {"t":"invoke","id":ID,"deadline_ms":MS,"arn":A,"trace_id":T,
//                      "client_context":C,"identity":I,"event":E} | {"t":"shutdown"}
//   worker -> server  {"t":"result","id":ID,"payload":RAW_JSON} | {"t":"error","id":ID,"error":{...}}
//
// Errors are shaped as Lambda's Node runtime shapes them: {"errorType","errorMessage","trace"}.
//
// Response streaming: a handler wrapped in awslambda.streamifyResponse(async (event, responseStream, context)
// => ...) gets a Writable; every write goes out at once as {"t":"chunk","id":ID,"data":BASE64} frames of at
// most 1 MiB (the first also carries "content_type": application/octet-stream unless setContentType() said
// otherwise), and {"t":"result","id":ID,"streamed":true,"content_type":CT} ends the stream once the handler's
// promise settles (the stream is ended for it if need be) or, for a handler returning no promise, once the
// stream finishes (or the event loop empties). awslambda.HttpResponseStream.from(stream, {statusCode,
// headers, cookies}) sets Lambda's http-integration content type and writes the JSON prelude and 8 NUL bytes
// before the first byte of the body, as Lambda's runtime does. A rejection or a stream error ends the stream
// with an error frame.
// Before each reply frame (and before ready/init_error, under the id "init") every byte of the function's
// output is on the log pipe and "\x1e" + id + "\x1e" is written to fd 1, so the server knows that
// request's output is complete. EOF on the input or a shutdown frame ends the process with status 0.
//
// Choices worth knowing (all mirror Lambda unless said otherwise):
// - Handler `dir/file.a.b`: module `dir/file` (split at the first dot after the last slash), property
//   path `a.b`. The file is found as Lambda finds it: `file` (no extension), `file.js` by require() unless
//   the nearest package.json says "type": "module", then `file.js` by import() when it does, `file.mjs` by
//   import(), `file.cjs` by require(), and last require.resolve(`file`) from the task root (a package in
//   node_modules). CommonJS goes through require() rather than import() so module.exports is seen whole.
// - Init errors: Runtime.MalformedHandlerName, Runtime.ImportModuleError (MODULE_NOT_FOUND and, beyond
//   Lambda's older runtimes, ESM's ERR_MODULE_NOT_FOUND), Runtime.UserCodeSyntaxError, and
//   Runtime.HandlerNotFound ("<handler> is undefined or not exported" / "<handler> is not a function").
//   Anything else thrown at module top level is reported as thrown. Lambda's runtime treats a failed init
//   as an uncaught exception, so the worker logs "Uncaught Exception" and exits with status 129.
// - A handler's result: a returned promise (thenable) settles the invocation; otherwise callback(err,
//   result) or context.done/succeed/fail does. With callbackWaitsForEmptyEventLoop (the default) a
//   callback's result is sent once the event loop has emptied, as in Lambda; `false` sends it at once.
//   A handler with fewer than 3 parameters that returns a value other than undefined and not a promise
//   gets that value sent (Lambda would send null once the loop empties; Node 24's runtime uses the
//   value). When nothing settles the invocation and the event loop empties, null is sent (as Lambda).
// - A result JSON.stringify cannot write (circular, BigInt, a throwing toJSON) is the error
//   {"errorType":"Runtime.MarshalError","errorMessage":"Unable to stringify response body",
//   "trace":[the cause's message lines]}. undefined (or a value JSON drops, like a function) is null.
// - Uncaught exceptions and unhandled rejections end the process as Lambda's runtime does: exit status
//   129 (exception) or 128 (rejection), after reporting them as the running invocation's error (or as
//   the init error, during init). An unhandled rejection is Runtime.UnhandledPromiseRejection.
// - console.log/info/warn/error/debug/trace/fatal write one record each, synchronously, to fd 1 in
//   Lambda's text format `<ISO time>\t<request id>\t<LEVEL>\t<util.format(...)>\n`; newlines inside a
//   message stay. AWS_LAMBDA_LOG_LEVEL (TRACE..FATAL) silences the levels below it. stdout and stderr
//   are switched to blocking writes, so process.stdout.write output is never queued behind the sentinel.
// - context.getRemainingTimeInMillis() never goes below 0.
// - NODE_PATH: require() honours it natively. ES modules ignore NODE_PATH, so when it names
//   `node_modules` directories outside the task root's own node_modules chain (layers), a resolve hook is
//   registered that retries a bare specifier that was not found against each of them, with full ESM
//   resolution (package "exports", conditions). It needs module.registerHooks (Node 22.15+, in-thread)
//   or module.register (Node 18.19+/20.6+, costs a hooks thread). NODE_PATH entries not named
//   node_modules are not consulted for imports.

import fs from 'node:fs';
import * as nodeModule from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import util from 'node:util';

const BOOTSTRAP_PATH = fileURLToPath(import.meta.url);
const require = nodeModule.createRequire(import.meta.url);

const SENTINEL_MARK = '\x1e';
const INIT_ID = 'init';
// Lambda's Node runtime: process.exit(129) after an uncaught exception, 128 after an unhandled rejection.
const EXIT_UNCAUGHT_EXCEPTION = 129;
const EXIT_UNHANDLED_REJECTION = 128;
const MARSHAL_ERROR_MESSAGE = 'Unable to stringify response body';
// Lambda's runtime marks streaming handlers with these symbols (awslambda.streamifyResponse).
const HANDLER_STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
const HANDLER_HIGHWATERMARK = Symbol.for('aws.lambda.runtime.handler.streaming.highWaterMark');
const STREAM_CONTENT_TYPE = 'application/octet-stream';
const HTTP_INTEGRATION = 'application/vnd.awslambda.http-integration-response';
const CHUNK_BYTES = 1 << 20;

// ---------------------------------------------------------------------------------------------------
// Low-level output

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/** Writes all of `text` to `fd`, waiting out EAGAIN; false when the fd is gone (EPIPE, EBADF). */
function writeAll(fd, text) {
  const buf = Buffer.from(text, 'utf8');
  let offset = 0;
  while (offset < buf.length) {
    try {
      offset += fs.writeSync(fd, buf, offset, buf.length - offset);
    } catch (err) {
      if (err && err.code === 'EAGAIN') {
        Atomics.wait(sleepCell, 0, 0, 1); // the pipe is full: give the reader a moment
        continue;
      }
      if (err && err.code === 'EINTR') continue;
      return false;
    }
  }
  return true;
}

const stdStreams = () => [process.stdout, process.stderr];

/** Makes process.stdout/stderr write synchronously, whatever fd 1 and 2 are (Node queues on a full pipe). */
function makeStdioBlocking() {
  for (const stream of stdStreams()) {
    try {
      const handle = stream && stream._handle;
      if (handle && typeof handle.setBlocking === 'function') handle.setBlocking(true);
    } catch {
      // not a stream Node can switch; writes still go through writeAll's EAGAIN loop or the stream
    }
  }
}

function stdioPending() {
  for (const stream of stdStreams()) {
    try {
      if (stream && !stream.destroyed && stream.writableLength > 0) return true;
    } catch {
      // a stream the function replaced with something odd
    }
  }
  return false;
}

/** Calls `then` once process.stdout/stderr have nothing queued (at once, usually: they block). */
function flushStdio(then) {
  if (!stdioPending()) {
    then();
    return;
  }
  const giveUp = Date.now() + 5000;
  const poll = () => {
    if (!stdioPending() || Date.now() > giveUp) then();
    else setTimeout(poll, 2);
  };
  setTimeout(poll, 2);
}

/** One log record (or any text) onto the log pipe, after whatever the function queued on stdout. */
function writeLog(text) {
  const stdout = process.stdout;
  try {
    if (stdout && !stdout.destroyed && stdout.writableLength > 0) {
      stdout.write(text);
      return;
    }
  } catch {
    // fall through to the fd
  }
  writeAll(1, text);
}

function writeSentinel(requestId) {
  writeAll(1, SENTINEL_MARK + requestId + SENTINEL_MARK);
}

// ---------------------------------------------------------------------------------------------------
// Console, in Lambda's text format

let currentRequestId; // undefined until the first invocation, then the latest one (as Lambda)

const LEVELS = { TRACE: 1, DEBUG: 2, INFO: 3, WARN: 4, ERROR: 5, FATAL: 6 };

function formatRecord(level, message, params) {
  return `${new Date().toISOString()}\t${currentRequestId}\t${level}\t${util.format(message, ...params)}\n`;
}

function logRecord(level, message, ...params) {
  writeLog(formatRecord(level, message, params));
}

function patchConsole() {
  const wanted = (process.env.AWS_LAMBDA_LOG_LEVEL || '').trim().toUpperCase();
  const threshold = LEVELS[wanted] || LEVELS.TRACE;
  const method = (level) =>
    LEVELS[level] >= threshold
      ? function (message, ...params) {
          writeLog(formatRecord(level, message, params));
        }
      : function () {};
  console.trace = method('TRACE');
  console.debug = method('DEBUG');
  console.info = method('INFO');
  console.log = console.info;
  console.warn = method('WARN');
  console.error = method('ERROR');
  console.fatal = method('FATAL');
}

// ---------------------------------------------------------------------------------------------------
// Errors

function runtimeErrorClass(name) {
  const cls = class extends Error {};
  // On the prototype before any instance exists, so stacks read "Runtime.<name>: ...".
  Object.defineProperty(cls.prototype, 'name', { value: `Runtime.${name}`, writable: true, configurable: true });
  return cls;
}

const ImportModuleError = runtimeErrorClass('ImportModuleError');
const HandlerNotFound = runtimeErrorClass('HandlerNotFound');
const MalformedHandlerName = runtimeErrorClass('MalformedHandlerName');
const UserCodeSyntaxError = runtimeErrorClass('UserCodeSyntaxError');
const UnhandledPromiseRejectionBase = runtimeErrorClass('UnhandledPromiseRejection');

class UnhandledPromiseRejection extends UnhandledPromiseRejectionBase {
  constructor(reason, promise) {
    super(reason);
    this.reason = reason;
    this.promise = promise;
  }
}

function isErrorLike(value) {
  if (util.types.isNativeError(value)) return true;
  return Boolean(
    value &&
      typeof value.name === 'string' &&
      typeof value.message === 'string' &&
      typeof value.stack === 'string' &&
      value.name &&
      value.message &&
      value.stack,
  );
}

/** The error object sent to the server: {errorType, errorMessage, trace}, as Lambda's Node runtime. */
function errorPayload(error) {
  try {
    if (isErrorLike(error)) {
      return { errorType: error.name, errorMessage: error.message, trace: error.stack.split('\n') };
    }
    return { errorType: typeof error, errorMessage: error.toString(), trace: [] };
  } catch {
    return {
      errorType: 'handled',
      errorMessage:
        'callback called with Error argument, but there was a problem while retrieving one or more of its ' +
        'message, name, and stack',
    };
  }
}

function intoError(value) {
  return value instanceof Error ? value : new Error(value);
}

function withEnumerableProperties(value) {
  if (value instanceof Error) {
    const out = Object.assign({ errorType: value.name, errorMessage: value.message, code: value.code }, value);
    if (typeof value.stack === 'string') out.stack = value.stack.split('\n');
    return out;
  }
  return value;
}

/** How Lambda prints an error after a label in the log: a tab, then JSON with the stack as lines. */
function formatForLog(error) {
  try {
    return '\t' + JSON.stringify(error, (_key, value) => withEnumerableProperties(value));
  } catch {
    try {
      return '\t' + JSON.stringify(errorPayload(error));
    } catch {
      return '\t' + safeString(error);
    }
  }
}

function safeString(value) {
  try {
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/** Frames must be JSON: an error whose fields are not serializable gets them as strings. */
function frameError(error) {
  try {
    JSON.stringify(error);
    return error;
  } catch {
    const out = { errorType: safeString(error.errorType), errorMessage: safeString(error.errorMessage) };
    if (Array.isArray(error.trace)) out.trace = error.trace.map(safeString);
    return out;
  }
}

// ---------------------------------------------------------------------------------------------------
// Loading the handler, as Lambda's Node runtime does

const FUNCTION_EXPR = /^([^.]*)\.(.*)$/;

function hasFolderPackageJsonTypeModule(folder) {
  if (folder.endsWith(`${path.sep}node_modules`)) return false;
  const packageJson = path.join(folder, 'package.json');
  if (fs.existsSync(packageJson)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(packageJson, 'utf8'));
      if (pkg) return pkg.type === 'module';
    } catch (err) {
      console.warn(`${packageJson} cannot be read, it will be ignored for ES module detection purposes.`, err);
      return false;
    }
  }
  const parent = path.dirname(folder);
  if (parent === folder) return false;
  return hasFolderPackageJsonTypeModule(parent);
}

function hasPackageJsonTypeModule(file) {
  const jsPath = file + '.js';
  return fs.existsSync(jsPath) ? hasFolderPackageJsonTypeModule(path.resolve(path.dirname(jsPath))) : false;
}

function tryRequireFile(file, extension = '') {
  const target = file + extension;
  return fs.existsSync(target) ? require(target) : undefined;
}

async function tryImport(file, extension) {
  const target = file + extension;
  return fs.existsSync(target) ? await import(pathToFileURL(target).href) : undefined;
}

async function tryLoad(appRoot, moduleRoot, moduleName) {
  const lambdaStylePath = path.resolve(appRoot, moduleRoot, moduleName);
  const extensionless = tryRequireFile(lambdaStylePath);
  if (extensionless) return extensionless;
  const typeModule = hasPackageJsonTypeModule(lambdaStylePath);
  if (!typeModule) {
    const loaded = tryRequireFile(lambdaStylePath, '.js');
    if (loaded) return loaded;
  }
  const loaded =
    (typeModule && (await tryImport(lambdaStylePath, '.js'))) ||
    (await tryImport(lambdaStylePath, '.mjs')) ||
    tryRequireFile(lambdaStylePath, '.cjs');
  if (loaded) return loaded;
  // A package of that name in node_modules (or on NODE_PATH); fails with "Cannot find module '<name>'".
  const resolved = require.resolve(moduleName, { paths: [appRoot, path.resolve(appRoot, moduleRoot)] });
  return require(resolved);
}

async function loadUserApp(appRoot, moduleRoot, moduleName) {
  try {
    return await tryLoad(appRoot, moduleRoot, moduleName);
  } catch (err) {
    if (err instanceof SyntaxError) throw new UserCodeSyntaxError(err);
    if (err && (err.code === 'MODULE_NOT_FOUND' || err.code === 'ERR_MODULE_NOT_FOUND')) {
      throw new ImportModuleError(err);
    }
    throw err;
  }
}

async function loadHandler(appRoot, fullHandler) {
  if (fullHandler.includes('..')) {
    throw new MalformedHandlerName(
      `'${fullHandler}' is not a valid handler name. Use absolute paths when specifying root directories in ` +
        'handler names.',
    );
  }
  const moduleAndHandler = path.basename(fullHandler);
  const moduleRoot = fullHandler.substring(0, fullHandler.indexOf(moduleAndHandler));
  const match = moduleAndHandler.match(FUNCTION_EXPR);
  if (!match) throw new MalformedHandlerName('Bad handler');
  const [, moduleName, handlerPath] = match;
  const userApp = await loadUserApp(appRoot, moduleRoot, moduleName);
  const handler = handlerPath.split('.').reduce((nested, key) => nested && nested[key], userApp);
  if (!handler) throw new HandlerNotFound(`${fullHandler} is undefined or not exported`);
  if (typeof handler !== 'function') throw new HandlerNotFound(`${fullHandler} is not a function`);
  return handler;
}

// ---------------------------------------------------------------------------------------------------
// NODE_PATH for ES modules (see the header)

function isBareSpecifier(specifier) {
  return (
    typeof specifier === 'string' &&
    specifier !== '' &&
    specifier !== '.' &&
    specifier !== '..' &&
    !specifier.startsWith('/') &&
    !specifier.startsWith('./') &&
    !specifier.startsWith('../') &&
    !specifier.startsWith('#') &&
    !/^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(specifier)
  );
}

/** NODE_PATH's node_modules directories that an import from the task root would not search anyway. */
function esmNodePathParents(appRoot) {
  const chain = new Set();
  for (let dir = path.resolve(appRoot); ; dir = path.dirname(dir)) {
    chain.add(path.join(dir, 'node_modules'));
    if (path.dirname(dir) === dir) break;
  }
  const parents = [];
  for (const entry of (process.env.NODE_PATH || '').split(path.delimiter)) {
    if (!entry) continue;
    const dir = path.resolve(entry);
    if (path.basename(dir) !== 'node_modules' || chain.has(dir)) continue;
    try {
      if (!fs.statSync(dir).isDirectory()) continue;
    } catch {
      continue;
    }
    // A file beside the node_modules directory: resolution from it searches that directory first.
    const parentURL = pathToFileURL(path.join(path.dirname(dir), '__faas_node_path__.mjs')).href;
    if (!parents.includes(parentURL)) parents.push(parentURL);
  }
  return parents;
}

/** Node 22.15+/23.5+: a synchronous hook, run in this thread (it sees require() too, and passes it on). */
function registerSyncHook(parents) {
  nodeModule.registerHooks({
    resolve(specifier, context, nextResolve) {
      try {
        return nextResolve(specifier, context);
      } catch (error) {
        if (!error || error.code !== 'ERR_MODULE_NOT_FOUND' || !isBareSpecifier(specifier)) throw error;
        for (const parentURL of parents) {
          try {
            return nextResolve(specifier, { ...context, parentURL });
          } catch {
            // not in this one
          }
        }
        throw error;
      }
    },
  });
}

/** Node 18.19+/20.6+: the same hook as a module on the loader thread. */
function registerAsyncHook(parents) {
  const source =
    `const PARENTS = ${JSON.stringify(parents)};\n` +
    `const isBare = ${isBareSpecifier.toString()};\n` +
    'export async function resolve(specifier, context, nextResolve) {\n' +
    '  try {\n' +
    '    return await nextResolve(specifier, context);\n' +
    '  } catch (error) {\n' +
    "    if (!error || error.code !== 'ERR_MODULE_NOT_FOUND' || !isBare(specifier)) throw error;\n" +
    '    for (const parentURL of PARENTS) {\n' +
    '      try {\n' +
    '        return await nextResolve(specifier, { ...context, parentURL });\n' +
    '      } catch {}\n' +
    '    }\n' +
    '    throw error;\n' +
    '  }\n' +
    '}\n';
  nodeModule.register('data:text/javascript,' + encodeURIComponent(source));
}

function installEsmNodePath(appRoot) {
  const parents = esmNodePathParents(appRoot);
  if (!parents.length) return;
  const ways = [];
  if (typeof nodeModule.registerHooks === 'function') ways.push(registerSyncHook);
  if (typeof nodeModule.register === 'function') ways.push(registerAsyncHook);
  // Hooks may still be called experimental: that is no news for the function's log.
  const emitWarning = process.emitWarning;
  process.emitWarning = function (warning, ...rest) {
    const type = typeof rest[0] === 'string' ? rest[0] : rest[0] && rest[0].type;
    if (type === 'ExperimentalWarning') return undefined;
    return emitWarning.call(process, warning, ...rest);
  };
  let failure = 'this Node.js has no module hooks';
  try {
    for (const register of ways) {
      try {
        register(parents);
        return;
      } catch (err) {
        failure = safeString(err);
      }
    }
  } finally {
    process.emitWarning = emitWarning;
  }
  writeLog(formatRecord('WARN', 'NODE_PATH is not available to ES module imports:', [failure]));
}

// ---------------------------------------------------------------------------------------------------
// The channel to the server

let input; // net.Socket reading frames
let output; // net.Socket writing frames (the same object when one fd serves both ways)
let pendingWrites = 0;
let writeWaiters = [];

function openChannel() {
  const fdIn = Number.parseInt(process.env._FAAS_FD_IN || '3', 10);
  const fdOut = Number.parseInt(process.env._FAAS_FD_OUT || '4', 10);
  delete process.env._FAAS_FD_IN;
  delete process.env._FAAS_FD_OUT;
  try {
    if (!Number.isInteger(fdIn) || !Number.isInteger(fdOut) || fdIn < 0 || fdOut < 0) {
      throw new Error(`bad fd numbers ${fdIn}/${fdOut}`);
    }
    if (fdIn === fdOut) {
      input = new net.Socket({ fd: fdIn, readable: true, writable: true, allowHalfOpen: true });
      output = input;
    } else {
      input = new net.Socket({ fd: fdIn, readable: true, writable: false, allowHalfOpen: true });
      output = new net.Socket({ fd: fdOut, readable: false, writable: true });
      output.unref(); // its pending writes keep the process alive; the socket itself need not
    }
  } catch (err) {
    writeAll(2, `faas bootstrap: no server channel: ${safeString(err && err.message)}\n`);
    process.exit(1);
  }
  const serverGone = () => process.exit(1);
  input.on('error', serverGone);
  if (output !== input) output.on('error', serverGone);

  let partial = [];
  input.on('data', (chunk) => {
    let start = 0;
    let newline;
    while ((newline = chunk.indexOf(10, start)) !== -1) {
      let line = chunk.subarray(start, newline);
      if (partial.length) {
        partial.push(line);
        line = Buffer.concat(partial);
        partial = [];
      }
      start = newline + 1;
      receiveLine(line);
    }
    if (start < chunk.length) partial.push(chunk.subarray(start));
  });
  input.on('end', () => {
    queue.push(EOF);
    pump();
  });
}

function send(text, then) {
  pendingWrites += 1;
  try {
    output.write(text, () => {
      pendingWrites -= 1;
      if (then) then();
      if (pendingWrites === 0) {
        const waiters = writeWaiters;
        writeWaiters = [];
        for (const waiter of waiters) waiter();
      }
    });
  } catch {
    process.exit(1); // the server is gone
  }
}

function sendFrame(frame, then) {
  send(JSON.stringify(frame) + '\n', then);
}

function whenWritten(then) {
  if (pendingWrites === 0) then();
  else writeWaiters.push(then);
}

/** Leaves once every frame is written and the function's output is out. */
function exitWhenFlushed(code) {
  whenWritten(() => flushStdio(() => process.exit(code)));
}

// ---------------------------------------------------------------------------------------------------
// Response streaming (the `awslambda` global)

function streamifyResponse(handler, options) {
  handler[HANDLER_STREAMING] = 'response';
  if (options && typeof options.highWaterMark === 'number') handler[HANDLER_HIGHWATERMARK] = options.highWaterMark;
  return handler;
}

/** The responseStream a streaming handler writes to: each write becomes chunk frames to the server. */
class ResponseStream extends Writable {
  constructor(id, highWaterMark) {
    super(typeof highWaterMark === 'number' ? { highWaterMark } : {});
    this._faas = { id, contentType: STREAM_CONTENT_TYPE, started: false, prelude: null, closed: false };
  }

  setContentType(contentType) {
    if (this._faas.started) throw new Error('The content type must be set before the first write');
    this._faas.contentType = String(contentType);
  }

  get contentType() {
    return this._faas.contentType;
  }

  _write(chunk, _encoding, callback) {
    this._faasSend(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk), callback);
  }

  _final(callback) {
    this._faasSend(Buffer.alloc(0), callback); // a prelude with no body still goes out
  }

  _faasSend(buf, callback) {
    const state = this._faas;
    let data = buf;
    if (!state.started && state.prelude) data = Buffer.concat([state.prelude, Buffer.alloc(8), buf]);
    if (state.closed || data.length === 0) {
      callback();
      return;
    }
    const frames = [];
    for (let start = 0; start < data.length; start += CHUNK_BYTES) {
      const frame = { t: 'chunk', id: state.id, data: data.subarray(start, start + CHUNK_BYTES).toString('base64') };
      if (!state.started) frame.content_type = state.contentType;
      state.started = true;
      frames.push(JSON.stringify(frame) + '\n');
    }
    frames.forEach((text, i) => send(text, i === frames.length - 1 ? () => callback() : undefined));
  }
}

/** Lambda's helper for function URLs: a status, headers and cookies ahead of the body. */
class HttpResponseStream {
  static from(underlyingStream, prelude) {
    underlyingStream.setContentType(HTTP_INTEGRATION);
    const head = Buffer.from(JSON.stringify(prelude === undefined ? {} : prelude));
    if (underlyingStream instanceof ResponseStream) {
      underlyingStream._faas.prelude = head;
    } else {
      underlyingStream.write(head);
      underlyingStream.write(new Uint8Array(8));
    }
    return underlyingStream;
  }
}

function installAwslambdaGlobal() {
  globalThis.awslambda = { streamifyResponse, HttpResponseStream };
}

/** Runs a streaming handler; `finish(isError, value, stream)` settles the invocation once. */
function invokeStreaming(invocation, event, context, finish) {
  const stream = new ResponseStream(invocation.id, handler[HANDLER_HIGHWATERMARK]);
  const done = () => finish(false, undefined, stream);
  const fail = (err) => {
    stream._faas.closed = true; // nothing written after the error frame
    finish(true, err === undefined || err === null ? 'handled' : err);
  };
  const endThenFinish = () => {
    if (stream.writableFinished) {
      done();
      return;
    }
    stream.once('finish', done);
    if (!stream.writableEnded) stream.end();
  };
  stream.once('error', fail);
  // The event loop emptied with the stream still open: end it for the handler.
  beforeExitAction = endThenFinish;
  try {
    const result = handler(event, stream, context);
    if (isPromiseLike(result)) result.then(endThenFinish, fail);
    else stream.once('finish', done);
  } catch (err) {
    fail(err);
  }
}

// ---------------------------------------------------------------------------------------------------
// Serving

const EOF = Symbol('eof');
const queue = [];
let handler;
let phase = 'init'; // 'init' until the ready frame is sent, then 'serving', then 'closing'
let initFailed = false;
let current = null; // the invocation in progress: {id, state: "running" | "finishing"}
let beforeExitAction = null;
let exitAfterReply = null; // an exit status to leave with once the current reply is written

function receiveLine(buf) {
  const text = buf.toString('utf8').trim();
  if (!text) return;
  let frame;
  try {
    frame = JSON.parse(text);
  } catch {
    frame = null;
  }
  if (!frame || typeof frame !== 'object' || Array.isArray(frame)) {
    writeLog(formatRecord('ERROR', 'Malformed frame from the server ignored', []));
    return;
  }
  queue.push(frame);
  pump();
}

function pump() {
  while (phase === 'serving' && current === null && queue.length) {
    const frame = queue.shift();
    if (frame === EOF || frame.t === 'shutdown') {
      phase = 'closing';
      queue.length = 0;
      exitWhenFlushed(0);
      return;
    }
    if (frame.t === 'invoke') {
      invoke(frame);
      return;
    }
  }
}

function isPromiseLike(value) {
  return Boolean(value && value.then && typeof value.then === 'function');
}

function invoke(frame) {
  const id = frame.id === undefined || frame.id === null ? '' : safeString(frame.id);
  const invocation = { id, state: 'running' };
  current = invocation;
  currentRequestId = id;
  if (frame.trace_id) process.env._X_AMZN_TRACE_ID = safeString(frame.trace_id);
  else delete process.env._X_AMZN_TRACE_ID;
  const deadline = Number(frame.deadline_ms) || 0;

  // While the function runs, only its own work keeps the event loop alive: an empty loop is how
  // callbackWaitsForEmptyEventLoop is honoured, and how an invocation nothing settles ends (null).
  input.unref();

  const finish = (isError, value, stream) => {
    if (invocation.state !== 'running') return;
    invocation.state = 'finishing';
    beforeExitAction = null;
    completeInvocation(invocation, isError, value, stream);
  };
  let waitsForEmptyEventLoop = true;
  let callbackCalled = false;
  let contextCalled = false;
  const callback = (err, result) => {
    if (callbackCalled) return;
    callbackCalled = true;
    if (err !== undefined && err !== null) finish(true, err);
    else if (!waitsForEmptyEventLoop) finish(false, result);
    else beforeExitAction = () => setImmediate(() => finish(false, result));
  };
  const done = (err, result) => {
    if (contextCalled) return;
    contextCalled = true;
    if (err !== undefined && err !== null) finish(true, err);
    else finish(false, result);
  };
  const succeed = (result) => done(null, result);
  const fail = (err) => done(err === undefined || err === null ? 'handled' : err, null);
  beforeExitAction = () => finish(false, null);

  const env = process.env;
  const context = {
    get callbackWaitsForEmptyEventLoop() {
      return waitsForEmptyEventLoop;
    },
    set callbackWaitsForEmptyEventLoop(value) {
      waitsForEmptyEventLoop = value;
    },
    succeed,
    fail,
    done,
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: frame.client_context === null ? undefined : frame.client_context,
    identity: frame.identity === null ? undefined : frame.identity,
    invokedFunctionArn: frame.arn,
    awsRequestId: id,
    getRemainingTimeInMillis() {
      return Math.max(0, deadline - Date.now());
    },
  };

  const event = frame.event === undefined ? null : frame.event;
  if (handler[HANDLER_STREAMING] === 'response') {
    invokeStreaming(invocation, event, context, finish);
    return;
  }
  try {
    const result = handler(event, context, callback);
    if (isPromiseLike(result)) result.then(succeed, fail);
    else if (result !== undefined && handler.length < 3) succeed(result);
  } catch (err) {
    callback(err);
  }
}

function marshal(value) {
  try {
    const text = JSON.stringify(value === undefined ? null : value);
    return { text: text === undefined ? 'null' : text };
  } catch (cause) {
    return {
      error: {
        errorType: 'Runtime.MarshalError',
        errorMessage: MARSHAL_ERROR_MESSAGE,
        trace: safeString(cause).split('\n'),
      },
    };
  }
}

function completeInvocation(invocation, isError, value, stream) {
  let reply;
  try {
    let error = null;
    if (isError) {
      error = errorPayload(value);
      logRecord('ERROR', 'Invoke Error', formatForLog(intoError(value)));
    } else if (stream) {
      const done = { t: 'result', id: invocation.id, streamed: true, content_type: stream.contentType };
      reply = JSON.stringify(done) + '\n';
    } else {
      const marshalled = marshal(value);
      if (marshalled.error) {
        error = marshalled.error;
        logRecord('ERROR', 'Invoke Error', formatForLog(error));
      } else {
        reply = `{"t":"result","id":${JSON.stringify(invocation.id)},"payload":${marshalled.text}}\n`;
      }
    }
    if (error) reply = JSON.stringify({ t: 'error', id: invocation.id, error: frameError(error) }) + '\n';
  } catch (err) {
    const error = { errorType: 'Runtime.Unknown', errorMessage: safeString(err), trace: [] };
    reply = JSON.stringify({ t: 'error', id: invocation.id, error }) + '\n';
  }
  flushStdio(() => {
    writeSentinel(invocation.id);
    // Tell the server this environment ends with this reply, so it is not handed another request.
    if (exitAfterReply !== null) reply = reply.replace(/}\n$/, ',"exiting":true}\n');
    send(reply);
    current = null;
    input.ref();
    if (exitAfterReply !== null) {
      phase = 'closing';
      exitWhenFlushed(exitAfterReply);
      return;
    }
    pump();
  });
}

// ---------------------------------------------------------------------------------------------------
// Init, and what ends the process

function reportInitError(error, exitCode) {
  if (initFailed) return;
  initFailed = true;
  phase = 'closing';
  logRecord('ERROR', 'Uncaught Exception', formatForLog(error));
  const payload = frameError(errorPayload(error));
  flushStdio(() => {
    writeSentinel(INIT_ID);
    sendFrame({ t: 'init_error', error: payload });
    exitWhenFlushed(exitCode);
  });
}

/** An uncaught exception or unhandled rejection: report it where it belongs, then leave. */
function fatal(error, exitCode) {
  if (initFailed || phase === 'closing') return;
  if (phase === 'init') {
    reportInitError(error, exitCode);
    return;
  }
  if (current !== null) {
    exitAfterReply = exitAfterReply === null ? exitCode : exitAfterReply;
    if (current.state === 'running') {
      const invocation = current;
      invocation.state = 'finishing';
      beforeExitAction = null;
      const payload = frameError(errorPayload(error));
      flushStdio(() => {
        writeSentinel(invocation.id);
        sendFrame({ t: 'error', id: invocation.id, error: payload, exiting: true });
        current = null;
        phase = 'closing';
        exitWhenFlushed(exitCode);
      });
    }
    return; // a reply is on its way; completeInvocation leaves after it
  }
  phase = 'closing';
  exitWhenFlushed(exitCode);
}

function installProcessHandlers() {
  process.on('uncaughtException', (error) => {
    logRecord('ERROR', 'Uncaught Exception', formatForLog(error));
    fatal(error, EXIT_UNCAUGHT_EXCEPTION);
  });
  process.on('unhandledRejection', (reason, promise) => {
    let text;
    try {
      text = reason === undefined || reason === null ? reason : reason.toString();
    } catch {
      text = safeString(reason);
    }
    const error = new UnhandledPromiseRejection(text, promise);
    logRecord('ERROR', 'Unhandled Promise Rejection', formatForLog(error));
    fatal(error, EXIT_UNHANDLED_REJECTION);
  });
  process.on('beforeExit', () => {
    const action = beforeExitAction;
    beforeExitAction = null;
    if (action) action();
  });
}

async function main() {
  makeStdioBlocking();
  patchConsole();
  installProcessHandlers();
  openChannel();
  installAwslambdaGlobal();
  const appRoot = process.env.LAMBDA_TASK_ROOT || process.cwd();
  installEsmNodePath(appRoot);
  let loaded;
  try {
    loaded = await loadHandler(appRoot, process.env._HANDLER || '');
  } catch (error) {
    reportInitError(error, EXIT_UNCAUGHT_EXCEPTION);
    return;
  }
  if (initFailed) return; // an uncaught exception from the module's own async work came first
  handler = loaded;
  flushStdio(() => {
    if (initFailed) return;
    writeSentinel(INIT_ID);
    const initMs = Math.round(performance.now() * 1000) / 1000;
    sendFrame({ t: 'ready', init_ms: initMs });
    phase = 'serving';
    pump();
  });
}

main();
