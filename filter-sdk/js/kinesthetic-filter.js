// Kinesthetic filters in JavaScript: one function per line.
//
// Write a function that gets each line of a batch and answers what to do
// with it, and hand it to `world`; componentize-js builds it into a filter
// component (see the README, "Writing a filter in JavaScript"):
//
//     // app.js
//     import { world } from './kinesthetic-filter.js';
//     export function line(line, params) {
//       return line.text.includes('error');  // true: keep it; false or null: drop
//     }
//     export const { init, filter } = world(line);
//
//     // component.js: the component's entry, the file componentize-js builds
//     import log from 'log';
//     import { useHostLog } from './kinesthetic-filter.js';
//     useHostLog(log);
//     export { init, filter } from './app.js';
//
// The answer for a line is one of:
// - `null`, `undefined` or `false`: drop it;
// - `true`: keep it, byte for byte;
// - a string or a `Uint8Array`: keep it, replaced by these bytes (a string
//   as UTF-8);
// - `{ bytes, key, route }` (every field optional): keep it (replaced when
//   `bytes` is given), with a new partition key and/or a route name.
//
// The second argument is what `init` returned, by default the pipeline's
// parameters as a `Params` (a `Map` with `require`). Pass `{ init }` to
// `world` to prepare once per batch (compile a pattern, say); throwing an
// `InitError` (or `params.require` failing) stops the batch with its
// message. An exception in the line function fails the batch with the
// line's number and the exception.
//
// `run` runs the same function natively, without Wasm, for plain
// `node --test` tests.
//
// Every batch runs on a fresh instance: nothing survives from one batch to
// the next.
//
// Why two files (app.js and component.js) where Python has one: the world's
// `log` import exists only inside the component, as the module `'log'`.
// Node cannot resolve that name, and componentize-js's runtime
// (StarlingMonkey) cannot import it dynamically ("module record has
// unexpected status"), so no import of it can sit in a file the tests load.
// This helper therefore never imports `'log'`: the entry that only the Wasm
// build reads imports it and hands it over with `useHostLog`. Natively,
// `log` keeps the lines in `nativeLog` for the tests to look at.

/** The log levels of the world's `level` enum, as the host names them. */
export const LEVELS = Object.freeze(['trace', 'debug', 'info', 'warn', 'error']);

/** An error of `init`: the batch stops with its message. */
export class InitError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = 'InitError';
  }
}

/** The pipeline's parameters for this filter: a `Map` of strings. */
export class Params extends Map {
  /** The parameter `name`; an `InitError` naming it when it is missing. */
  require(name) {
    if (!this.has(name)) {
      throw new InitError(`parameter \`${name}\` is required`);
    }
    return this.get(name);
  }
}

/** Natively (no Wasm): the `[level, message]` pairs `log` was given. */
export const nativeLog = [];

let hostLog = null;

/**
 * Hands the world's `log` import to the helper; component.js calls it with
 * `import log from 'log'`. Natively it is never called.
 */
export function useHostLog(fn) {
  if (typeof fn !== 'function') {
    throw new TypeError(`useHostLog: expected the world's log function, got ${typeof fn}`);
  }
  hostLog = fn;
}

/**
 * Logs through the host (rate-limited there; natively kept in `nativeLog`).
 * `level` is one of `LEVELS`.
 */
export function log(level, message) {
  if (!LEVELS.includes(level)) {
    throw new TypeError(`log: level ${JSON.stringify(level)} is none of ${LEVELS.join(', ')}`);
  }
  const text = String(message);
  if (hostLog) {
    hostLog(level, text);
  } else {
    nativeLog.push([level, text]);
  }
}

// The decoders do not drop a leading byte-order mark: a line is the bytes
// the producer sent.
const LOSSY = new TextDecoder('utf-8', { ignoreBOM: true });
const ENCODER = new TextEncoder();

/** A batch as the world passes it: packed lines and keys, and stamps. */
class Batch {
  constructor(data, ends, keyData, keyEnds, listeners, counters, receivedMs) {
    this.data = data;
    this.ends = ends;
    this.keyData = keyData;
    this.keyEnds = keyEnds;
    this.listeners = listeners;
    this.counters = counters;
    this.receivedMs = receivedMs;
  }

  get length() {
    return this.ends.length;
  }
}

/** One line of a batch, with its stamp and partition key. */
export class Line {
  #batch;

  constructor(batch, index) {
    this.#batch = batch;
    /** Its position in the batch, from 0. */
    this.index = index;
  }

  /** The line's bytes (a view into the batch: copy it to keep it). */
  get bytes() {
    const b = this.#batch;
    const i = this.index;
    return b.data.subarray(i === 0 ? 0 : b.ends[i - 1], b.ends[i]);
  }

  /** The line as text (invalid UTF-8 replaced by U+FFFD). */
  get text() {
    return LOSSY.decode(this.bytes);
  }

  /** The partition key. */
  get key() {
    const b = this.#batch;
    const i = this.index;
    return LOSSY.decode(b.keyData.subarray(i === 0 ? 0 : b.keyEnds[i - 1], b.keyEnds[i]));
  }

  /** Event id, part 1: the intake listener's id (a BigInt). */
  get listener() {
    return this.#batch.listeners[this.index];
  }

  /** Event id, part 2: the listener's counter (a BigInt). */
  get counter() {
    return this.#batch.counters[this.index];
  }

  /** Receive time, milliseconds since the Unix epoch (a Number). */
  get receivedMs() {
    return Number(this.#batch.receivedMs[this.index]);
  }
}

/** `e` in a message: `Name: message` for an error, else its text. */
function describe(e) {
  if (e instanceof Error) {
    return `${e.name}: ${e.message}`;
  }
  return String(e);
}

function answerError(index, what) {
  return new Error(`line ${index + 1} of the batch: ${what}`);
}

const EMIT_FIELDS = new Set(['bytes', 'key', 'route']);

/** Bytes of a `bytes` answer: a string (as UTF-8) or a `Uint8Array`. */
function answerBytes(index, value) {
  if (typeof value === 'string') {
    return ENCODER.encode(value);
  }
  if (value instanceof Uint8Array) {
    return value;
  }
  throw answerError(index, `\`bytes\` is ${typeof value}, not a string or a Uint8Array`);
}

function answerText(index, field, value) {
  if (value === undefined || value === null) {
    return null;
  }
  if (typeof value !== 'string') {
    throw answerError(index, `\`${field}\` is ${typeof value}, not a string`);
  }
  return ENCODER.encode(value);
}

/**
 * The kept lines of `batch`: per kept line `[index, bytes|null,
 * key|null, route|null]` (the last three as UTF-8 bytes). Throws an Error
 * naming the line when the line function throws or answers nonsense.
 */
function answers(lineFn, state, batch) {
  const kept = [];
  const n = batch.length;
  for (let index = 0; index < n; index++) {
    let a;
    try {
      a = lineFn(new Line(batch, index), state);
    } catch (e) {
      throw new Error(`line ${index + 1} of the batch: ${describe(e)}`, { cause: e });
    }
    if (a === null || a === undefined || a === false) {
      continue;
    }
    if (a === true) {
      kept.push([index, null, null, null]);
    } else if (typeof a === 'string' || a instanceof Uint8Array) {
      kept.push([index, answerBytes(index, a), null, null]);
    } else if (typeof a === 'object' && !Array.isArray(a) && !ArrayBuffer.isView(a)) {
      if (typeof a.then === 'function') {
        throw answerError(index, 'the answer is a Promise: the line function must not be async');
      }
      for (const field of Object.keys(a)) {
        if (!EMIT_FIELDS.has(field)) {
          throw answerError(index, `the answer has a field \`${field}\`; expected bytes, key, route`);
        }
      }
      const bytes = a.bytes === undefined || a.bytes === null ? null : answerBytes(index, a.bytes);
      kept.push([index, bytes, answerText(index, 'key', a.key), answerText(index, 'route', a.route)]);
    } else {
      let shown;
      try {
        shown = typeof a === 'bigint' ? `${a}n` : JSON.stringify(a);
      } catch {
        shown = typeof a;
      }
      throw answerError(
        index,
        `the answer ${shown} is none of null, false, true, a string, a Uint8Array or {bytes, key, route}`,
      );
    }
  }
  return kept;
}

/** Runs `init` (if any) on the parameters: what the line function gets. */
function prepare(init, pairs) {
  const params = new Params(pairs);
  return init ? init(params) : params;
}

/** The world's `patches` of the kept lines' field `pos` (1 bytes, 2 key, 3 route). */
function patches(kept, pos) {
  const lines = [];
  const chunks = [];
  let total = 0;
  for (const k of kept) {
    const v = k[pos];
    if (v !== null) {
      lines.push(k[0]);
      chunks.push(v);
      total += v.length;
    }
  }
  const data = new Uint8Array(total);
  const ends = new Uint32Array(chunks.length);
  let at = 0;
  for (let i = 0; i < chunks.length; i++) {
    data.set(chunks[i], at);
    at += chunks[i].length;
    ends[i] = at;
  }
  return { lines: Uint32Array.from(lines), values: { data, ends } };
}

/** The world's `output` for the kept lines. */
function output(kept) {
  return {
    emit: Uint32Array.from(kept, (k) => k[0]),
    replace: patches(kept, 1),
    rekey: patches(kept, 2),
    route: patches(kept, 3),
  };
}

/** An error value for a `result<_, string>` export. */
function err(e) {
  return { tag: 'err', val: e instanceof InitError ? e.message : describe(e) };
}

/**
 * The world's exports, `{ init, filter }`, running `lineFn` on every line of
 * a batch (after `init` once per batch). Export both from the module
 * componentize-js builds.
 */
export function world(lineFn, { init } = {}) {
  if (typeof lineFn !== 'function') {
    throw new TypeError('world: the first argument must be the line function');
  }
  if (init !== undefined && typeof init !== 'function') {
    throw new TypeError('world: `init` must be a function');
  }
  let state;
  let ready = false;
  return {
    // A `result<_, string>` export: returning `{tag: 'err', val}` is the
    // error. (componentize-js also turns a thrown string into one, but a
    // thrown Error becomes a trap, and its message is lost.)
    init(params) {
      try {
        state = prepare(init, params);
        ready = true;
      } catch (e) {
        return err(e);
      }
      return undefined;
    },
    filter(batch) {
      try {
        const b = new Batch(
          batch.lines.data,
          batch.lines.ends,
          batch.keys.data,
          batch.keys.ends,
          batch.listeners,
          batch.counters,
          batch.receivedMs,
        );
        return output(answers(lineFn, ready ? state : prepare(undefined, []), b));
      } catch (e) {
        return { tag: 'err', val: e.message };
      }
    },
  };
}

/** Packs byte strings the world's way: one buffer and the end of each. */
function pack(items) {
  const total = items.reduce((n, b) => n + b.length, 0);
  const data = new Uint8Array(total);
  const ends = new Uint32Array(items.length);
  let at = 0;
  items.forEach((b, i) => {
    data.set(b, at);
    at += b.length;
    ends[i] = at;
  });
  return { data, ends };
}

function asBytes(what, i, v) {
  if (typeof v === 'string') {
    return ENCODER.encode(v);
  }
  if (v instanceof Uint8Array) {
    return v;
  }
  throw new TypeError(`run: ${what} ${i} is ${typeof v}, not a string or a Uint8Array`);
}

/** One output line of `run`: its bytes, partition key and route. */
export class Out {
  constructor(bytes, key, route) {
    this.bytes = bytes;
    this.key = key;
    this.route = route;
  }

  /** The bytes as text (invalid UTF-8 replaced). */
  get text() {
    return LOSSY.decode(this.bytes);
  }
}

/**
 * Runs `lineFn` natively over `lines` (strings or Uint8Arrays) as one batch,
 * as the component would, and returns the output lines (`Out`s). `params`
 * is an object, a Map or a list of pairs; `keys` the lines' partition keys
 * (default `k`). An error of `init` is thrown as it is (an `InitError`, say);
 * a failing line throws an Error naming it, as it would fail the batch.
 */
export function run(lineFn, lines, params = {}, { init, keys } = {}) {
  const pairs =
    params instanceof Map || Array.isArray(params) ? [...params] : Object.entries(params);
  const state = prepare(init, pairs);
  const bytes = lines.map((l, i) => asBytes('line', i, l));
  const packedLines = pack(bytes);
  const keyBytes = lines.map((_, i) => asBytes('key', i, keys ? keys[i] : 'k'));
  const packedKeys = pack(keyBytes);
  const n = lines.length;
  const batch = new Batch(
    packedLines.data,
    packedLines.ends,
    packedKeys.data,
    packedKeys.ends,
    BigUint64Array.from({ length: n }, () => 1n),
    BigUint64Array.from({ length: n }, (_, i) => BigInt(i + 1)),
    BigInt64Array.from({ length: n }, () => 0n),
  );
  const out = output(answers(lineFn, state, batch));
  // Read the output back the way the host does.
  const patch = (p) => {
    const m = new Map();
    p.lines.forEach((line, i) => {
      m.set(line, p.values.data.subarray(i === 0 ? 0 : p.values.ends[i - 1], p.values.ends[i]));
    });
    return m;
  };
  const [replace, rekey, route] = [patch(out.replace), patch(out.rekey), patch(out.route)];
  return Array.from(out.emit, (i) => {
    const r = route.get(i);
    return new Out(
      replace.get(i) ?? bytes[i],
      rekey.has(i) ? LOSSY.decode(rekey.get(i)) : LOSSY.decode(keyBytes[i]),
      r === undefined ? null : LOSSY.decode(r),
    );
  });
}
