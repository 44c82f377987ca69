/*
 * `contains`: a Kinesthetic filter written in C.
 *
 * Keeps the lines that contain the parameter `needle` (required, not empty),
 * byte for byte; with `ignore-case=true` ASCII letters match either case
 * (other bytes, UTF-8 included, still match exactly). Kept lines are emitted
 * by index only, so they are never copied back to the host; the filter
 * replaces, re-keys and routes nothing.
 *
 * Parameters
 *   needle=TEXT          what a kept line contains (required)
 *   ignore-case=BOOL     `true` or `false` (default `false`)
 *
 * Build (what `cargo xtask build-filters` runs; see the README):
 *
 *   wit-bindgen c wit --world filter --out-dir build/gen
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -msimd128 \
 *         -Wl,--strip-all \
 *         -Ibuild/gen -o build/contains.core.wasm \
 *         contains.c build/gen/filter.c build/gen/filter_component_type.o
 *   wasm-tools component new build/contains.core.wasm -o contains.wasm
 *
 * The bindings (`filter.h`, `filter.c`) are generated from the repository's
 * `wit/filter.wit` at build time and never committed.
 *
 * Rules of the generated C bindings that this file follows:
 *   - The callee owns its arguments: `init` frees its parameter list and
 *     `filter` its batch (one `free` per list, so it costs next to nothing).
 *   - Returned lists and error strings are handed to the host and then
 *     `free()`d by the bindings, so they must come from `malloc`, never be a
 *     string literal. An empty list may be `{NULL, 0}`.
 *   - No stdio (`printf`, `snprintf`, ...): it would pull in WASI imports.
 *     With none, the component imports nothing but the world's `log`, which
 *     is all the host links.
 *
 * Every batch runs on a fresh instance (`init`, then `filter`), so the
 * globals below live for one batch only.
 */

/* For memmem, which wasi-libc (musl) declares only with _GNU_SOURCE or
 * _BSD_SOURCE. */
#define _GNU_SOURCE

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __wasm_simd128__
#include <wasm_simd128.h>
#endif

#include "filter.h"

/* What `init` parsed: the needle (lower-cased when ignoring case). */
static uint8_t *needle;
static size_t needle_len;
static bool ignore_case;

/*
 * ASCII lower case, branch-free so that clang vectorises the loop that folds
 * a whole batch (16 bytes at a time with -msimd128).
 */
static inline uint8_t fold(uint8_t c) {
  return (uint8_t)(c + (((uint8_t)(c - 'A') < 26) << 5));
}

/* ---- small helpers ---------------------------------------------------- */

/* Whether the WIT string `s` equals the C string `lit`. */
static bool str_is(const filter_string_t *s, const char *lit) {
  size_t n = strlen(lit);
  return s->len == n && memcmp(s->ptr, lit, n) == 0;
}

/*
 * Sets `err` to a new heap string `a` + `b[..b_len]` + `c` (the bindings free
 * it). If even that allocation fails there is nothing better to say than an
 * empty message, which the host still reports as a failed init.
 */
static void set_error(filter_string_t *err, const char *a, const uint8_t *b,
                      size_t b_len, const char *c) {
  size_t a_len = strlen(a), c_len = strlen(c);
  uint8_t *s = malloc(a_len + b_len + c_len);
  if (s == NULL) {
    err->ptr = NULL;
    err->len = 0;
    return;
  }
  memcpy(s, a, a_len);
  if (b_len > 0) memcpy(s + a_len, b, b_len);
  memcpy(s + a_len + b_len, c, c_len);
  err->ptr = s;
  err->len = a_len + b_len + c_len;
}

/* Logs `contains: needle=NEEDLE ignore-case=BOOL` through the host. */
static void log_settings(const filter_string_t *given) {
  static const char head[] = "contains: needle=";
  const char *tail = ignore_case ? " ignore-case=true" : " ignore-case=false";
  size_t head_len = sizeof head - 1, tail_len = strlen(tail);
  uint8_t *s = malloc(head_len + given->len + tail_len);
  if (s == NULL) return; /* logging is best effort */
  memcpy(s, head, head_len);
  memcpy(s + head_len, given->ptr, given->len);
  memcpy(s + head_len + given->len, tail, tail_len);
  filter_string_t msg = {s, head_len + given->len + tail_len};
  /* An import borrows its arguments: the string stays ours to free. */
  filter_log(KINESTHETIC_FILTER_TYPES_LEVEL_INFO, &msg);
  free(s);
}

/* ---- init ------------------------------------------------------------- */

bool exports_filter_init(filter_list_tuple2_string_string_t *params,
                         filter_string_t *err) {
  bool ok = false;
  const filter_string_t *given = NULL, *ic = NULL;

  /* The last value wins when a key is given twice; unknown keys are ignored. */
  for (size_t i = 0; i < params->len; i++) {
    const filter_tuple2_string_string_t *p = &params->ptr[i];
    if (str_is(&p->f0, "needle")) given = &p->f1;
    else if (str_is(&p->f0, "ignore-case")) ic = &p->f1;
  }

  if (given == NULL) {
    set_error(err, "missing parameter `needle`", NULL, 0, "");
    goto done;
  }
  if (given->len == 0) {
    set_error(err, "parameter `needle` must not be empty", NULL, 0, "");
    goto done;
  }
  if (ic == NULL || str_is(ic, "false")) {
    ignore_case = false;
  } else if (str_is(ic, "true")) {
    ignore_case = true;
  } else {
    set_error(err, "parameter `ignore-case`: expected `true` or `false`, got `",
              ic->ptr, ic->len, "`");
    goto done;
  }

  needle = malloc(given->len);
  if (needle == NULL) {
    set_error(err, "contains: out of memory", NULL, 0, "");
    goto done;
  }
  needle_len = given->len;
  for (size_t i = 0; i < needle_len; i++)
    needle[i] = ignore_case ? fold(given->ptr[i]) : given->ptr[i];

  log_settings(given);
  ok = true;

done:
  filter_list_tuple2_string_string_free(params);
  return ok;
}

/* ---- matching --------------------------------------------------------- */

/*
 * Whether the needle occurs in `hay[..len]`.
 *
 * With Wasm SIMD (`-msimd128`, as the build uses) 16 candidate positions are
 * tested at a time: a position is a candidate when both the needle's first
 * and last bytes are at the right distance, and only candidates are compared
 * in full. Comparing costs at most about the line's length in bytes; past
 * that (a pathological line such as "aaaa...", needle "aa...ab") the rest of
 * the line goes to wasi-libc's (musl's) memmem, a two-way search that is
 * linear in the line's length whatever the needle. Ignoring case, the batch
 * is lower-cased once into a copy and searched the same way.
 */
static bool contains(const uint8_t *hay, size_t len) {
  const size_t m = needle_len;
  if (len < m) return false;
  if (m == 1) return memchr(hay, needle[0], len) != NULL;
  size_t i = 0;
#ifdef __wasm_simd128__
  const size_t starts = len - m + 1; /* candidate starts are 0..starts-1 */
  const v128_t first = wasm_u8x16_splat(needle[0]);
  const v128_t last = wasm_u8x16_splat(needle[m - 1]);
  size_t budget = len + 64; /* bytes we may compare before giving up */
  for (; i + 16 <= starts; i += 16) {
    v128_t a = wasm_v128_load(hay + i);
    v128_t b = wasm_v128_load(hay + i + m - 1);
    uint32_t mask = wasm_i8x16_bitmask(
        wasm_v128_and(wasm_i8x16_eq(a, first), wasm_i8x16_eq(b, last)));
    while (mask != 0) {
      size_t at = i + (size_t)__builtin_ctz(mask);
      if (budget < m) /* too many near misses: finish in linear time */
        return memmem(hay + at, len - at, needle, m) != NULL;
      budget -= m;
      if (memcmp(hay + at + 1, needle + 1, m - 2) == 0) return true;
      mask &= mask - 1;
    }
  }
#endif
  return memmem(hay + i, len - i, needle, m) != NULL;
}

/* ---- filter ----------------------------------------------------------- */

bool exports_filter_filter(filter_batch_t *batch, filter_output_t *ret,
                           filter_string_t *err) {
  const kinesthetic_filter_types_packed_t *lines = &batch->lines;
  const size_t n = lines->ends.len;
  bool ok = false;

  /* Nothing but `emit` is set: empty replace/rekey/route patches. */
  memset(ret, 0, sizeof *ret);

  /* Room for every line; the unused tail is simply never read. */
  uint32_t *emit = n > 0 ? malloc(n * sizeof *emit) : NULL;
  if (n > 0 && emit == NULL) {
    set_error(err, "contains: out of memory", NULL, 0, "");
    goto done;
  }

  /* The bytes to search: the batch's, or a lower-cased copy of them. */
  const uint8_t *data = lines->data.ptr;
  uint8_t *folded = NULL;
  if (ignore_case && lines->data.len > 0) {
    folded = malloc(lines->data.len);
    if (folded == NULL) {
      free(emit);
      set_error(err, "contains: out of memory", NULL, 0, "");
      goto done;
    }
    for (size_t i = 0; i < lines->data.len; i++) folded[i] = fold(data[i]);
    data = folded;
  }

  size_t kept = 0, start = 0;
  for (size_t i = 0; i < n; i++) {
    size_t end = lines->ends.ptr[i];
    /* The host guarantees this; a bad batch is an error, not a wild read. */
    if (end < start || end > lines->data.len) {
      free(emit);
      free(folded);
      set_error(err, "contains: malformed batch (line ends out of order)",
                NULL, 0, "");
      goto done;
    }
    if (contains(data + start, end - start)) emit[kept++] = (uint32_t)i;
    start = end;
  }
  free(folded);

  if (kept == 0) {
    free(emit);
    emit = NULL;
  }
  ret->emit.ptr = emit;
  ret->emit.len = kept;
  ok = true;

done:
  filter_batch_free(batch);
  return ok;
}
