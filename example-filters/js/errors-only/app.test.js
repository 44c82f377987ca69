// Native tests (`node --test`): the filter's logic without Wasm.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { run } from '../../../filter-sdk/js/kinesthetic-filter.js';
import { errorsOnly } from './app.js';

const out = (...lines) => run(errorsOnly, lines).map((o) => o.text);

test('keeps server errors, reduced', () => {
  assert.deepEqual(
    out(
      '{"ts":"2024-05-01T12:00:00Z","level":"error","status":503,"service":"api","msg":"boom","user":{"id":7}}',
    ),
    ['{"ts":"2024-05-01T12:00:00Z","service":"api","msg":"boom"}'],
  );
  assert.deepEqual(out('{"msg":"m","service":"s","status":500,"level":"error","ts":1}'), [
    '{"ts":1,"service":"s","msg":"m"}',
  ]);
});

test('drops the rest', () => {
  assert.deepEqual(
    out(
      '{"level":"warn","status":503}',
      '{"level":"error","status":499}',
      '{"level":"error","status":"503"}',
      '{"level":"error"',
      'plain text',
      '{"level":"error","status":1e999}',
      '{"level":"error","status":503,"x":-1e400}',
      '{"level":"error","status":503,"msg":"\\ud800"}',
      '{"level":"error","status":503,"b\\ud800":1}',
      '\ufeff{"level":"error","status":503}',
      '{"level":"error","status":503,"n":01}',
      '{"level":"error","status":503} x',
    ),
    [],
  );
  assert.deepEqual(run(errorsOnly, [Uint8Array.of(0x7b, 0xff, 0x7d)]), []);
});

test('numbers, strings and nested values stay as written', () => {
  assert.deepEqual(out('{"level":"error","status":5e2,"ts":1.50e+3,"msg":{ "a" : [1, 2] }}'), [
    '{"ts":1.50e+3,"msg":{"a":[1,2]}}',
  ]);
  assert.deepEqual(out('{"le\\u0076el":"\\u0065rror","st\\u0061tus":503,"m\\u0073g":"caf\\u00e9 \\ud83d\\ude00"}'), [
    '{"msg":"caf\\u00e9 \\ud83d\\ude00"}',
  ]);
});

test('duplicated keys: every level and status must pass, the last value is kept', () => {
  assert.deepEqual(out('{"level":"error","level":"warn","status":500}'), []);
  assert.deepEqual(out('{"level":"error","status":500,"ts":1,"ts":2}'), ['{"ts":2}']);
});

test('nesting: 127 levels with the line itself, not 128', () => {
  const nested = (n) => `{"level":"error","status":503,"msg":${'['.repeat(n)}${']'.repeat(n)}}`;
  assert.deepEqual(out(nested(126)), [`{"msg":${'['.repeat(126)}${']'.repeat(126)}}`]);
  assert.deepEqual(out(nested(127)), []);
});
