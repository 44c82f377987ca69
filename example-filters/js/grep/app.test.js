// Native tests (`node --test`): the filter's logic without Wasm.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { InitError, run } from '../../../filter-sdk/js/kinesthetic-filter.js';
import { grep, init } from './app.js';

const kept = (params, ...lines) => run(grep, lines, params, { init }).map((o) => o.text);

test('keeps matches, and inverts', () => {
  assert.deepEqual(kept({ pattern: 'sshd\\[' }, 'sshd[1]: ok', 'cron: x'), ['sshd[1]: ok']);
  assert.deepEqual(kept({ pattern: 'sshd', invert: 'true' }, 'sshd[1]: ok', 'cron: x'), ['cron: x']);
});

test('a missing or bad parameter stops init, naming it', () => {
  assert.throws(() => kept({}, 'x'), { name: 'InitError', message: 'parameter `pattern` is required' });
  assert.throws(() => kept({ pattern: '(' }, 'x'), (e) => e instanceof InitError && e.message.startsWith('pattern "(": '));
  assert.throws(() => kept({ pattern: 'x', invert: 'yes' }, 'x'), /parameter `invert`: "yes"/);
});
