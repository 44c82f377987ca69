// The component's entry: componentize-js builds this file, the tests import
// app.js. The world's `log` import exists only in the Wasm build (node
// cannot load it), so it is handed to the helper here.
import log from 'log';
import { useHostLog } from './kinesthetic-filter.js';
import app from './app.js';

useHostLog(log);

export const { init, filter } = app;
