// Native tests of `@NAME@` (`node --test`): no Wasm involved.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { run } from './kinesthetic-filter.js';
import { init, line } from './app.js';

test('keeps lines with the needle', () => {
  const out = run(line, ['an error', 'all fine', 'error!'], { needle: 'error' }, { init });
  assert.deepEqual(
    out.map((o) => o.text),
    ['an error', 'error!'],
  );
});

test('the needle is required', () => {
  assert.throws(() => run(line, ['x'], {}, { init }), { name: 'InitError', message: /needle/ });
});
