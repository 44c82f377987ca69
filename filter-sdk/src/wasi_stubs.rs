//! The WASI functions that Rust's standard library links on `wasm32-wasip2`,
//! defined inside the filter instead of imported from the host.
//!
//! `std` reaches `wasi:cli/*` and `wasi:io/*` through wasi-libc for stdio,
//! the environment and `exit`. A filter gets none of these from the host,
//! which used to satisfy the imports with trapping stubs. Every import costs
//! time at each instantiation, which happens once per batch: the 19 of them
//! made up about 1.5 µs of a 10 µs job. wasi-libc names each import it uses
//! with a `__wasm_import_…` symbol; defining those symbols here makes the
//! linker use these definitions, so the component imports only its world.
//!
//! What a filter sees:
//! * `print!`/`println!` and `eprint!`/`eprintln!` go to the host's log, a
//!   line per log message (stdout at `info`, stderr at `warn`), rate-limited
//!   like [`crate::log`]. A line without its newline is held until one
//!   comes, until it reaches [`MAX_LINE`] bytes, or until the batch ends
//!   (`print!`'s own buffer in `std` is not flushed: end with a newline).
//! * The environment is empty: `std::env::var` finds nothing.
//! * `std::process::exit` logs an error and traps.
//! * Reading stdin is not linked here; it would import `wasi:io` functions,
//!   which the host stubs to trap.
//!
//! If a newer wasi-libc renames a symbol, the import simply comes back and
//! the host's stub serves it; a host test checks that the example filters
//! import nothing but their world.
#![allow(unsafe_code, clippy::missing_safety_doc)]

use std::cell::RefCell;

use crate::Level;

/// Stream handles handed to wasi-libc; any values work, they are only
/// passed back to the functions below.
const STDIN: i32 = 1;
const STDOUT: i32 = 2;
const STDERR: i32 = 3;
const POLLABLE: i32 = 4;

/// Longest line held back waiting for its newline.
pub(crate) const MAX_LINE: usize = 1024;

thread_local! {
    /// Partial lines written to stdout and stderr.
    static PENDING: RefCell<[Vec<u8>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// Logs the complete lines of `bytes` written to stream `handle`.
fn forward(handle: i32, bytes: &[u8]) {
    let (slot, level) = match handle {
        STDOUT => (0, Level::Info),
        STDERR => (1, Level::Warn),
        _ => return,
    };
    PENDING.with(|p| {
        let Ok(mut pending) = p.try_borrow_mut() else {
            return;
        };
        let buf = &mut pending[slot];
        buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            crate::log(level, &String::from_utf8_lossy(&buf[start..start + nl]));
            start += nl + 1;
        }
        while buf.len() - start >= MAX_LINE {
            crate::log(
                level,
                &String::from_utf8_lossy(&buf[start..start + MAX_LINE]),
            );
            start += MAX_LINE;
        }
        buf.drain(..start);
    });
}

/// Logs what is left of a line without its newline; called at the end of
/// each batch, since the instance does not outlive it.
pub(crate) fn flush_pending() {
    PENDING.with(|p| {
        let Ok(mut pending) = p.try_borrow_mut() else {
            return;
        };
        for (buf, level) in pending.iter_mut().zip([Level::Info, Level::Warn]) {
            if !buf.is_empty() {
                crate::log(level, &String::from_utf8_lossy(buf));
                buf.clear();
            }
        }
    });
}

/// Stores the canonical ABI's `ok` case of a `result` at `ret`.
unsafe fn ok(ret: *mut u8) {
    // SAFETY: wasi-libc passes a return area sized for the result.
    unsafe { ret.write(0) }
}

// wasi:cli/stdin, stdout, stderr: `get-*: func() -> own<stream>`.
#[unsafe(no_mangle)]
extern "C" fn __wasm_import_stdin_get_stdin() -> i32 {
    STDIN
}
#[unsafe(no_mangle)]
extern "C" fn __wasm_import_stdout_get_stdout() -> i32 {
    STDOUT
}
#[unsafe(no_mangle)]
extern "C" fn __wasm_import_stderr_get_stderr() -> i32 {
    STDERR
}

// wasi:cli/terminal-*: `get-terminal-*: func() -> option<own<terminal>>`:
// none, so no stream is a terminal.
#[unsafe(no_mangle)]
unsafe extern "C" fn __wasm_import_terminal_stdin_get_terminal_stdin(ret: *mut u8) {
    // SAFETY: the return area of an option; tag 0 is `none`.
    unsafe { ret.write(0) }
}
#[unsafe(no_mangle)]
unsafe extern "C" fn __wasm_import_terminal_stdout_get_terminal_stdout(ret: *mut u8) {
    // SAFETY: as above.
    unsafe { ret.write(0) }
}
#[unsafe(no_mangle)]
unsafe extern "C" fn __wasm_import_terminal_stderr_get_terminal_stderr(ret: *mut u8) {
    // SAFETY: as above.
    unsafe { ret.write(0) }
}

// wasi:cli/environment: `get-environment: func() -> list<tuple<string,
// string>>`, written as (pointer, length): the empty list.
#[unsafe(no_mangle)]
unsafe extern "C" fn __wasm_import_environment_get_environment(ret: *mut u32) {
    // SAFETY: the return area of a list is two u32s. A null pointer with
    // length 0 is what wasi-libc frees without harm.
    unsafe {
        ret.write(0);
        ret.add(1).write(0);
    }
}

// wasi:cli/exit: a filter may not end the instance itself.
#[unsafe(no_mangle)]
extern "C" fn __wasm_import_exit_exit(status: i32) {
    crate::log(
        Level::Error,
        &format!(
            "filter called exit ({}): a filter returns from `line` instead",
            if status == 0 { "success" } else { "failure" }
        ),
    );
    core::arch::wasm32::unreachable()
}

// wasi:io/streams, output side, enough for wasi-libc's `write`.
#[unsafe(no_mangle)]
unsafe extern "C" fn __wasm_import_streams_method_output_stream_check_write(_: i32, ret: *mut u8) {
    // SAFETY: `result<u64, stream-error>`: tag at 0, the u64 at 8.
    unsafe {
        ok(ret);
        ret.add(8).cast::<u64>().write_unaligned(64 << 10);
    }
}
#[unsafe(no_mangle)]
unsafe extern "C" fn __wasm_import_streams_method_output_stream_write(
    handle: i32,
    ptr: *const u8,
    len: usize,
    ret: *mut u8,
) {
    // SAFETY: wasi-libc passes a buffer of `len` bytes in this memory.
    let bytes = unsafe { core::slice::from_raw_parts(ptr, len) };
    forward(handle, bytes);
    // SAFETY: `result<_, stream-error>`.
    unsafe { ok(ret) }
}
#[unsafe(no_mangle)]
unsafe extern "C" fn __wasm_import_streams_method_output_stream_blocking_flush(
    _: i32,
    ret: *mut u8,
) {
    // SAFETY: `result<_, stream-error>`.
    unsafe { ok(ret) }
}
#[unsafe(no_mangle)]
extern "C" fn __wasm_import_streams_method_output_stream_subscribe(_: i32) -> i32 {
    POLLABLE
}
#[unsafe(no_mangle)]
extern "C" fn __wasm_import_poll_method_pollable_block(_: i32) {}

// Resource drops: nothing to release.
#[unsafe(no_mangle)]
extern "C" fn __wasm_import_io_error_error_drop(_: i32) {}
#[unsafe(no_mangle)]
extern "C" fn __wasm_import_poll_pollable_drop(_: i32) {}
#[unsafe(no_mangle)]
extern "C" fn __wasm_import_streams_input_stream_drop(_: i32) {}
#[unsafe(no_mangle)]
extern "C" fn __wasm_import_streams_output_stream_drop(_: i32) {}
#[unsafe(no_mangle)]
extern "C" fn __wasm_import_terminal_input_terminal_input_drop(_: i32) {}
#[unsafe(no_mangle)]
extern "C" fn __wasm_import_terminal_output_terminal_output_drop(_: i32) {}
