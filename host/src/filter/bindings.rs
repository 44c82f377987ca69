//! Host bindings generated from `wit/filter.wit`. Private to `filter/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "filter",
});
