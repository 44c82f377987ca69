// `grep` in JavaScript: keeps the lines that match the regular expression in
// the parameter `pattern` (JavaScript's RegExp, on the line's text); with
// `invert=true`, the lines that do not.

import { InitError, world } from '../../../filter-sdk/js/kinesthetic-filter.js';

export function init(params) {
  const pattern = params.require('pattern');
  let regex;
  try {
    regex = new RegExp(pattern);
  } catch (e) {
    throw new InitError(`pattern ${JSON.stringify(pattern)}: ${e.message}`, { cause: e });
  }
  const invert = params.get('invert') ?? 'false';
  if (invert !== 'true' && invert !== 'false') {
    throw new InitError(`parameter \`invert\`: ${JSON.stringify(invert)} is neither true nor false`);
  }
  return { regex, invert: invert === 'true' };
}

export function grep(line, { regex, invert }) {
  return regex.test(line.text) !== invert;
}

// The world's exports; component.js exports them from the component.
export default world(grep, { init });
