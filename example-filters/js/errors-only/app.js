// `errors-only` in JavaScript: keeps JSON events whose top-level `level` is
// the string "error" and whose `status` is a number >= 500, reduced to `ts`,
// `service` and `msg` in that order, values as they came (compacted) — byte
// for byte the Rust `errors-only`'s output (a test checks it on the same
// input).
//
// `JSON.parse` cannot give that: it loses how numbers and strings were
// written (`1.50e+3`, `"caf\u00e9"`), keeps the last of duplicated keys and
// accepts what the Rust filter refuses (lone surrogate escapes, numbers
// beyond the f64 range, nesting past 127 levels). So the line is walked
// token by token with sticky regular expressions, the way the Rust one
// walks it: front to back, dropped as soon as `level` or `status` rules it
// out, and validated to the end only when it is kept.

import { world } from '../../../filter-sdk/js/kinesthetic-filter.js';

/** The keys kept, in output order. */
const KEPT = ['ts', 'service', 'msg'];

/** Containers may nest this deep, the line's object included (as in Rust). */
const MAX_DEPTH = 127;

// Invalid UTF-8 anywhere makes the line invalid JSON: decoding fails. A
// byte-order mark is kept, and so refused as JSON (as in Rust).
const DECODER = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

const WS = /[ \t\n\r]*/y;
const STRING = /"[^"\\\u0000-\u001f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\u0000-\u001f]*)*"/y;
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const INSIGNIFICANT = /"(?:[^"\\]|\\.)*"|[ \t\n\r]+/g;

/** The first position at or after `i` that is not whitespace. */
function skip(s, i) {
  if (s.charCodeAt(i) > 0x20) {
    return i;
  }
  WS.lastIndex = i;
  WS.test(s);
  return WS.lastIndex;
}

/** The end of the string token at `s[i]`, or -1. */
function string(s, i) {
  STRING.lastIndex = i;
  if (!STRING.test(s)) {
    return -1;
  }
  const end = STRING.lastIndex;
  // A `\u` escape may encode half a surrogate pair: refused, as in Rust.
  // Raw text cannot hold one (it was valid UTF-8), so decoding tells.
  const token = s.slice(i, end);
  if (token.includes('\\u') && LONE_SURROGATE.test(JSON.parse(token))) {
    return -1;
  }
  return end;
}

/** The decoded content of the (valid) string token `s[i..end]`. */
function text(s, i, end) {
  const content = s.slice(i + 1, end - 1);
  return content.includes('\\') ? JSON.parse(s.slice(i, end)) : content;
}

/** The end of the number token at `s[i]`, or -1 (also beyond the f64 range). */
function number(s, i) {
  NUMBER.lastIndex = i;
  if (!NUMBER.test(s)) {
    return -1;
  }
  const end = NUMBER.lastIndex;
  // Only an exponent or more than 308 digits can reach infinity.
  if (end - i > 300 || /[eE]/.test(s.slice(i, end))) {
    if (!Number.isFinite(Number(s.slice(i, end)))) {
      return -1;
    }
  }
  return end;
}

/** The end of the value at `s[i]` inside `depth` open containers, or -1. */
function value(s, i, depth) {
  const c = s.charCodeAt(i);
  if (c === 0x22) {
    return string(s, i);
  }
  if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
    return number(s, i);
  }
  if (c === 0x7b || c === 0x5b) {
    return container(s, i, depth + 1);
  }
  for (const word of ['true', 'false', 'null']) {
    if (s.startsWith(word, i)) {
      return i + word.length;
    }
  }
  return -1;
}

/** The end of the object or array at `s[i]`, the `depth`th open one, or -1. */
function container(s, i, depth) {
  if (depth > MAX_DEPTH) {
    return -1;
  }
  const object = s.charCodeAt(i) === 0x7b;
  const close = object ? 0x7d : 0x5d;
  i = skip(s, i + 1);
  if (s.charCodeAt(i) === close) {
    return i + 1;
  }
  for (;;) {
    if (object) {
      if (s.charCodeAt(i) !== 0x22 || (i = string(s, i)) < 0) {
        return -1;
      }
      i = skip(s, i);
      if (s.charCodeAt(i) !== 0x3a) {
        return -1;
      }
      i = skip(s, i + 1);
    }
    i = value(s, i, depth);
    if (i < 0) {
      return -1;
    }
    i = skip(s, i);
    const c = s.charCodeAt(i);
    if (c === close) {
      return i + 1;
    }
    if (c !== 0x2c) {
      return -1;
    }
    i = skip(s, i + 1);
  }
}

/** A raw value without insignificant whitespace; strings unchanged. */
function compact(raw) {
  const c = raw.charCodeAt(0);
  if (c !== 0x7b && c !== 0x5b) {
    return raw;
  }
  return raw.replace(INSIGNIFICANT, (m) => (m.charCodeAt(0) === 0x22 ? m : ''));
}

/**
 * The reduced object for `bytes` (one line) as a string, or null when the
 * line is dropped. With a duplicated key every `level` and `status` must
 * pass, and the last `ts`, `service`, `msg` are kept (as in Rust).
 */
export function reduce(bytes) {
  let s;
  try {
    s = DECODER.decode(bytes);
  } catch {
    return null; // not UTF-8, so not JSON
  }
  let i = skip(s, 0);
  if (s.charCodeAt(i) !== 0x7b) {
    return null;
  }
  i = skip(s, i + 1);
  const kept = [null, null, null];
  let level = false;
  let status = false;
  if (s.charCodeAt(i) !== 0x7d) {
    for (;;) {
      const k = s.charCodeAt(i) === 0x22 ? string(s, i) : -1;
      if (k < 0) {
        return null;
      }
      const key = text(s, i, k);
      i = skip(s, k);
      if (s.charCodeAt(i) !== 0x3a) {
        return null;
      }
      const v = skip(s, i + 1);
      const end = value(s, v, 1);
      if (end < 0) {
        return null;
      }
      if (key === 'level') {
        if (s.charCodeAt(v) !== 0x22 || text(s, v, end) !== 'error') {
          return null;
        }
        level = true;
      } else if (key === 'status') {
        const c = s.charCodeAt(v);
        if (!(c === 0x2d || (c >= 0x30 && c <= 0x39)) || !(Number(s.slice(v, end)) >= 500)) {
          return null;
        }
        status = true;
      } else {
        const at = KEPT.indexOf(key);
        if (at >= 0) {
          kept[at] = s.slice(v, end);
        }
      }
      i = skip(s, end);
      const c = s.charCodeAt(i);
      if (c === 0x7d) {
        break;
      }
      if (c !== 0x2c) {
        return null;
      }
      i = skip(s, i + 1);
    }
  }
  if (skip(s, i + 1) !== s.length || !(level && status)) {
    return null;
  }
  const members = [];
  KEPT.forEach((name, at) => {
    if (kept[at] !== null) {
      members.push(`"${name}":${compact(kept[at])}`);
    }
  });
  return `{${members.join(',')}}`;
}

/** The line function: the reduced object replaces the line, or it is dropped. */
export function errorsOnly(line) {
  return reduce(line.bytes);
}

// The world's exports; component.js exports them from the component.
export default world(errorsOnly);
