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
// member by member with sticky regular expressions, the way the Rust one
// walks it: front to back, dropped as soon as `level` or `status` rules it
// out, and validated to the end only when it is kept.
//
// Written for componentize-js's interpreter (no JIT): every JavaScript
// operation costs ≈ 0.1–1 µs there, a native call (a regular expression, a
// search) about the same whatever it covers. So one regular expression
// matches a whole member (key, colon, scalar value, separator), and a line
// that holds neither a backslash nor `"error"` is dropped after two native
// searches: without escapes, `"level":"error"` can only be written so.

import { world } from '../../../filter-sdk/js/kinesthetic-filter.js';

/** The keys kept, in output order, as written in the output. */
const KEPT = ['"ts"', '"service"', '"msg"'];

/** Containers may nest this deep, the line's object included (as in Rust). */
const MAX_DEPTH = 127;

// Invalid UTF-8 anywhere makes the line invalid JSON: decoding fails. A
// byte-order mark is kept, and so refused as JSON (as in Rust).
const DECODER = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

// One member of an object: 1 the key; then a scalar value — 2 a string,
// 3 a number without its exponent, 4 the exponent, 5 a literal — with
// 6 the separator after it, if any; or 7 the bracket opening a container.
const MEMBER =
  /[ \t\n\r]*("[^"\\\u0000-\u001f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\u0000-\u001f]*)*")[ \t\n\r]*:[ \t\n\r]*(?:(?:("[^"\\\u0000-\u001f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\u0000-\u001f]*)*")|(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?)([eE][+-]?[0-9]+)?|(true|false|null))[ \t\n\r]*([,}\]])?|([{[]))/y;
// One element of an array: the same groups, 1 empty (no key).
const ELEMENT =
  /[ \t\n\r]*()(?:(?:("[^"\\\u0000-\u001f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\u0000-\u001f]*)*")|(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?)([eE][+-]?[0-9]+)?|(true|false|null))[ \t\n\r]*([,}\]])?|([{[]))/y;
const WS = /[ \t\n\r]*/y;
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

/**
 * Whether the string token `t` has a `\u` escape of half a surrogate pair
 * (refused, as in Rust). Raw text cannot hold one (it was valid UTF-8), so
 * decoding tells. Asked only of lines that have a `\u` at all.
 */
function lone(t) {
  return t.includes('\\u') && LONE_SURROGATE.test(JSON.parse(t));
}

/** A key as written, or, if it has escapes, decoded and written plainly. */
function keyName(t) {
  return t.includes('\\') ? JSON.stringify(JSON.parse(t)) : t;
}

/**
 * Checks the scalar value of the match `m` (a string with no lone surrogate,
 * a number within the f64 range), the key too when `escapes`.
 */
function scalarOk(m, escapes) {
  if (escapes && ((m[1] !== '' && lone(m[1])) || (m[2] !== undefined && lone(m[2])))) {
    return false;
  }
  // Only an exponent or more than 308 digits can reach infinity.
  return (
    m[3] === undefined ||
    (m[4] === undefined && m[3].length <= 300) ||
    Number.isFinite(Number(m[3] + (m[4] ?? '')))
  );
}

/**
 * The end of the container whose opening bracket is `s[i - 1]`, the
 * `depth`th open one, or -1 when it is not valid JSON.
 */
function container(s, i, depth, object, escapes) {
  if (depth > MAX_DEPTH) {
    return -1;
  }
  const re = object ? MEMBER : ELEMENT;
  const close = object ? '}' : ']';
  i = skip(s, i);
  if (s[i] === close) {
    return i + 1;
  }
  for (;;) {
    re.lastIndex = i;
    const m = re.exec(s);
    if (m === null) {
      return -1;
    }
    i = re.lastIndex;
    let sep = m[6];
    if (m[7] !== undefined) {
      if (escapes && m[1] !== '' && lone(m[1])) {
        return -1;
      }
      i = container(s, i, depth + 1, m[7] === '{', escapes);
      if (i < 0) {
        return -1;
      }
      i = skip(s, i);
      sep = s[i++];
    } else if (!scalarOk(m, escapes)) {
      return -1;
    }
    if (sep === close) {
      return i;
    }
    if (sep !== ',') {
      return -1;
    }
  }
}

/** A raw value without insignificant whitespace; strings unchanged. */
function compact(raw) {
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
  const backslash = s.indexOf('\\') >= 0;
  if (!backslash && s.indexOf('"error"') < 0) {
    return null; // no `"level":"error"` can be in it
  }
  const escapes = backslash && s.includes('\\u');
  let i = skip(s, 0);
  if (s[i] !== '{') {
    return null;
  }
  i = skip(s, i + 1);
  const kept = [null, null, null];
  let level = false;
  let status = false;
  if (s[i] !== '}') {
    for (;;) {
      MEMBER.lastIndex = i;
      const m = MEMBER.exec(s);
      if (m === null) {
        return null;
      }
      i = MEMBER.lastIndex;
      const key = backslash ? keyName(m[1]) : m[1];
      const at = KEPT.indexOf(key);
      let raw = null;
      let sep = m[6];
      if (m[7] !== undefined) {
        const start = i - 1;
        if (escapes && lone(m[1])) {
          return null;
        }
        i = container(s, i, 2, m[7] === '{', escapes);
        if (i < 0) {
          return null;
        }
        if (at >= 0) {
          raw = compact(s.slice(start, i));
        }
        i = skip(s, i);
        sep = s[i++];
      } else if (!scalarOk(m, escapes)) {
        return null;
      } else {
        raw = m[2] ?? m[5] ?? m[3] + (m[4] ?? '');
      }
      if (key === '"level"') {
        if (raw !== '"error"' && !(m[2] !== undefined && JSON.parse(raw) === 'error')) {
          return null;
        }
        level = true;
      } else if (key === '"status"') {
        if (m[3] === undefined || !(Number(raw) >= 500)) {
          return null;
        }
        status = true;
      } else if (at >= 0) {
        kept[at] = raw;
      }
      if (sep === '}') {
        break;
      }
      if (sep !== ',') {
        return null;
      }
    }
  } else {
    i++;
  }
  if (skip(s, i) !== s.length || !(level && status)) {
    return null;
  }
  const members = [];
  KEPT.forEach((name, at) => {
    if (kept[at] !== null) {
      members.push(`${name}:${kept[at]}`);
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
