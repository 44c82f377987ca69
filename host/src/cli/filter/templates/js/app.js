// `@NAME@`: a Kinesthetic filter in JavaScript. Keeps the lines that contain
// the parameter `needle`.
//
// Test natively:  node --test          (or npm test)
// Build:          @COMPONENTIZE@ component.js --wit @WIT@ --world-name filter --disable stdio random clocks http fetch-event --out @NAME@.wasm
// Run:            kinesthetic filter run @NAME@.wasm --param needle=error INPUT
//
// componentize-js builds component.js, which exports this file's world.

import { world } from './kinesthetic-filter.js';

export function init(params) {
  return params.require('needle');
}

export function line(line, needle) {
  return line.text.includes(needle);
}

export default world(line, { init });
