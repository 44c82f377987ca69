// Native tests of the helper (`node --test` in this directory): answers,
// errors, parameters, logging, and the world's exports on a batch shaped as
// componentize-js passes it.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { InitError, log, nativeLog, Params, run, world } from './kinesthetic-filter.js';

const texts = (out) => out.map((o) => o.text);

test('every kind of answer', () => {
  const answers = [null, undefined, false, true, 'new', Uint8Array.of(0x68, 0x69), { key: 'k2' }, { bytes: 'b', route: 'r' }];
  const out = run((line) => answers[line.index], answers.map((_, i) => `line ${i}`));
  assert.deepEqual(
    out.map((o) => [o.text, o.key, o.route]),
    [
      ['line 3', 'k', null],
      ['new', 'k', null],
      ['hi', 'k', null],
      ['line 6', 'k2', null],
      ['b', 'k', 'r'],
    ],
  );
});

test('lines: bytes, text, key and stamps', () => {
  const seen = [];
  run(
    (line) => {
      seen.push([line.index, [...line.bytes], line.text, line.key, line.listener, line.counter, line.receivedMs]);
    },
    ['é', Uint8Array.of(0xff)],
    {},
    { keys: ['a', 'b'] },
  );
  assert.deepEqual(seen, [
    [0, [0xc3, 0xa9], 'é', 'a', 1n, 1n, 0],
    [1, [0xff], '\ufffd', 'b', 1n, 2n, 0],
  ]);
});

test('parameters reach init, and its result reaches the line function', () => {
  const init = (params) => {
    assert.ok(params instanceof Params);
    return params.require('needle');
  };
  const line = (l, needle) => l.text.includes(needle);
  assert.deepEqual(texts(run(line, ['an error', 'fine'], { needle: 'err' }, { init })), ['an error']);
  assert.deepEqual(texts(run(line, ['an error', 'fine'], [['needle', 'fine']], { init })), ['fine']);
  assert.throws(() => run(line, ['x'], {}, { init }), {
    name: 'InitError',
    message: 'parameter `needle` is required',
  });
  // Without init, the line function gets the parameters.
  assert.deepEqual(texts(run((l, p) => p.get('keep') === l.text, ['a', 'b'], { keep: 'b' })), ['b']);
});

test('a failing line names its number; a wrong answer says what is allowed', () => {
  const boom = (l) => {
    if (l.index === 2) {
      throw new TypeError('no');
    }
    return true;
  };
  assert.throws(() => run(boom, ['a', 'b', 'c']), { message: 'line 3 of the batch: TypeError: no' });
  assert.throws(() => run(() => 42, ['a']), /line 1 of the batch: the answer 42 is none of null, false, true/);
  assert.throws(() => run(() => ({ text: 'x' }), ['a']), /line 1 of the batch: the answer has a field `text`/);
  assert.throws(() => run(() => ({ key: 7 }), ['a']), /line 1 of the batch: `key` is number, not a string/);
  assert.throws(() => run(async () => true, ['a']), /line 1 of the batch: the answer is a Promise/);
});

test('log: natively kept; a wrong level is refused', () => {
  nativeLog.length = 0;
  log('warn', 'careful');
  assert.deepEqual(nativeLog, [['warn', 'careful']]);
  assert.throws(() => log('fatal', 'x'), /level "fatal" is none of trace, debug, info, warn, error/);
});

/** A batch as componentize-js lifts it from the host. */
function batch(lines) {
  const enc = new TextEncoder();
  const pack = (items) => {
    const bytes = items.map((s) => enc.encode(s));
    const ends = new Uint32Array(bytes.length);
    let at = 0;
    bytes.forEach((b, i) => {
      at += b.length;
      ends[i] = at;
    });
    const data = new Uint8Array(at);
    bytes.forEach((b, i) => data.set(b, i === 0 ? 0 : ends[i - 1]));
    return { data, ends };
  };
  const n = lines.length;
  return {
    context: { stream: 's', shard: 'shardId-0', firstSequence: '1', lastSequence: '2' },
    lines: pack(lines),
    listeners: new BigUint64Array(n).fill(7n),
    counters: BigUint64Array.from({ length: n }, (_, i) => BigInt(i)),
    receivedMs: new BigInt64Array(n),
    keys: pack(lines.map((_, i) => `k${i}`)),
  };
}

test('the world: packed output, errors as result values', () => {
  const w = world((l) => (l.index === 0 ? 'zero' : l.index === 1 ? false : { key: 'x', route: 'r' }));
  assert.equal(w.init([]), undefined);
  const out = w.filter(batch(['a', 'b', 'c']));
  assert.deepEqual([...out.emit], [0, 2]);
  assert.deepEqual([...out.replace.lines], [0]);
  assert.equal(new TextDecoder().decode(out.replace.values.data), 'zero');
  assert.deepEqual([...out.replace.values.ends], [4]);
  assert.deepEqual([...out.rekey.lines], [2]);
  assert.deepEqual([...out.route.lines], [2]);
  assert.ok(out.emit instanceof Uint32Array && out.replace.values.data instanceof Uint8Array);

  const failing = world(() => true, {
    init: (p) => {
      throw new InitError(`bad ${p.get('x')}`);
    },
  });
  assert.deepEqual(failing.init([['x', '1']]), { tag: 'err', val: 'bad 1' });
  const crashing = world(() => true, {
    init: () => {
      throw new RangeError('oops');
    },
  });
  assert.deepEqual(crashing.init([]), { tag: 'err', val: 'RangeError: oops' });
  const throwing = world(() => {
    throw new Error('kaput');
  });
  throwing.init([]);
  assert.deepEqual(throwing.filter(batch(['a'])), { tag: 'err', val: 'line 1 of the batch: Error: kaput' });
});
