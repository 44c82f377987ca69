// `contains`: a Kinesthetic filter in C. Keeps the lines that contain the
// parameter `needle`; `ignore-case=true` compares ASCII letters without case.
//
// Built by `cargo xtask build-filters`:
//   wit-bindgen c wit --world filter --out-dir gen
//   clang --target=wasm32-wasi -mexec-model=reactor -O2 -Igen \
//         contains.c gen/filter.c gen/filter_component_type.o -o contains.core.wasm
//   wasm-tools component new contains.core.wasm -o contains.wasm
// No stdio is used, so the component imports nothing but the world's `log`.

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"

static uint8_t *needle;
static size_t needle_len;
static bool ignore_case;

// Error strings go back to the host, which frees them: heap-allocate.
static bool fail(filter_string_t *err, const char *msg, const filter_string_t *detail) {
    size_t n = strlen(msg), d = detail ? detail->len : 0;
    char *p = malloc(n + d + 3);
    if (!p) return false;
    memcpy(p, msg, n);
    if (detail) {
        p[n] = '`';
        memcpy(p + n + 1, detail->ptr, d);
        p[n + 1 + d] = '`';
        n += d + 2;
    }
    err->ptr = (uint8_t *)p;
    err->len = n;
    return false;
}

static bool is(const filter_string_t *s, const char *text) {
    size_t n = strlen(text);
    return s->len == n && memcmp(s->ptr, text, n) == 0;
}

static uint8_t lower(uint8_t c) {
    return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
}

bool exports_filter_init(filter_list_tuple2_string_string_t *params, filter_string_t *err) {
    const filter_string_t *found = NULL;
    for (size_t i = 0; i < params->len; i++) {
        filter_tuple2_string_string_t *kv = &params->ptr[i];
        if (is(&kv->f0, "needle")) {
            found = &kv->f1;
        } else if (is(&kv->f0, "ignore-case")) {
            if (is(&kv->f1, "true")) ignore_case = true;
            else if (is(&kv->f1, "false")) ignore_case = false;
            else return fail(err, "parameter `ignore-case` must be true or false, not ", &kv->f1);
        }
    }
    if (!found || found->len == 0) return fail(err, "missing parameter `needle`", NULL);
    needle_len = found->len;
    needle = malloc(needle_len);
    if (!needle) return fail(err, "out of memory", NULL);
    for (size_t i = 0; i < needle_len; i++)
        needle[i] = ignore_case ? lower(found->ptr[i]) : found->ptr[i];

    filter_string_t msg;
    filter_string_set(&msg, "contains: ready");
    filter_log(KINESTHETIC_FILTER_TYPES_LEVEL_DEBUG, &msg);
    filter_list_tuple2_string_string_free(params);
    return true;
}

static bool contains(const uint8_t *s, size_t n) {
    if (n < needle_len) return false;
    for (size_t i = 0; i + needle_len <= n; i++) {
        size_t j = 0;
        if (ignore_case) {
            while (j < needle_len && lower(s[i + j]) == needle[j]) j++;
        } else {
            const uint8_t *hit = memchr(s + i, needle[0], n - needle_len + 1 - i);
            if (!hit) return false;
            i = (size_t)(hit - s);
            while (j < needle_len && s[i + j] == needle[j]) j++;
        }
        if (j == needle_len) return true;
    }
    return false;
}

bool exports_filter_filter(filter_batch_t *batch, filter_output_t *ret, filter_string_t *err) {
    size_t lines = batch->lines.ends.len;
    memset(ret, 0, sizeof *ret);
    ret->emit.ptr = malloc(lines * sizeof(uint32_t) + 1);
    if (!ret->emit.ptr) return fail(err, "out of memory", NULL);
    size_t start = 0, kept = 0;
    for (size_t i = 0; i < lines; i++) {
        size_t end = batch->lines.ends.ptr[i];
        if (contains(batch->lines.data.ptr + start, end - start)) ret->emit.ptr[kept++] = (uint32_t)i;
        start = end;
    }
    ret->emit.len = kept;
    filter_batch_free(batch);
    return true;
}
