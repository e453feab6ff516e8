/* millrace plugin ABI v1 for C (see plugins/ABI.md). Header-only: include it in exactly one file. */
#ifndef MILLRACE_H
#define MILLRACE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MILLRACE_ABI_VERSION 1
#define MILLRACE_ABSENT 0xFFFFFFFFu
#define MILLRACE_NO_TIMESTAMP INT64_MIN

#define MILLRACE_IMPORT(name) __attribute__((import_module("millrace"), import_name(name)))
#define MILLRACE_EXPORT(name) __attribute__((export_name(name)))

MILLRACE_IMPORT("emit_point") int32_t millrace_emit_point(const char *line, uint32_t len);
MILLRACE_IMPORT("emit_document")
int32_t millrace_emit_document(const char *index, uint32_t index_len, const char *body, uint32_t body_len,
                               const char *id, uint32_t id_len);
MILLRACE_IMPORT("log") void millrace_log(int32_t level, const char *msg, uint32_t len);
MILLRACE_IMPORT("reject") void millrace_reject(const char *reason, uint32_t len);

/* A decoded record; pointers point into the host-written input buffer. Absent parts have a NULL pointer. */
typedef struct {
    int64_t offset;
    int64_t timestamp_ms; /* MILLRACE_NO_TIMESTAMP when absent */
    int32_t partition;
    const char *topic;
    uint32_t topic_len;
    const uint8_t *key;
    uint32_t key_len;
    const uint8_t *value;
    uint32_t value_len;
    uint32_t header_count;
    const uint8_t *headers; /* header_count entries: u32 name_len, u32 value_len, name, value */
    uint32_t headers_len;
} millrace_record;

/* The plugin's entry point, defined by the plugin: return 0, or call millrace_reject. */
int millrace_transform(const millrace_record *rec);

static uint8_t *millrace_input_buf;
static uint32_t millrace_input_cap;

static uint32_t millrace_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static int64_t millrace_i64(const uint8_t *p) { int64_t v; memcpy(&v, p, 8); return v; }

MILLRACE_EXPORT("millrace_abi_version") int32_t millrace_abi_version(void) { return MILLRACE_ABI_VERSION; }

MILLRACE_EXPORT("millrace_input") uint8_t *millrace_input(uint32_t len) {
    if (len > millrace_input_cap) {
        uint8_t *p = realloc(millrace_input_buf, len);
        if (!p) return 0;
        millrace_input_buf = p;
        millrace_input_cap = len;
    }
    return millrace_input_buf;
}

/* Takes `n` bytes at *at, or fails if they are not all inside the buffer. */
static int millrace_take(const uint8_t *buf, uint32_t len, uint32_t *at, uint32_t n, const uint8_t **out) {
    if (n == MILLRACE_ABSENT) { *out = 0; return 1; }
    if (n > len - *at) return 0;
    *out = buf + *at;
    *at += n;
    return 1;
}

MILLRACE_EXPORT("millrace_process") int32_t millrace_process(const uint8_t *buf, uint32_t len) {
    static const char bad[] = "malformed record encoding from the host";
    millrace_record r;
    const uint8_t *topic;
    uint32_t at = 40;
    if (buf != millrace_input_buf || len > millrace_input_cap || len < 40) return 2;
    r.offset = millrace_i64(buf);
    r.timestamp_ms = millrace_i64(buf + 8);
    r.partition = (int32_t)millrace_u32(buf + 16);
    r.topic_len = millrace_u32(buf + 24);
    r.key_len = millrace_u32(buf + 28);
    r.value_len = millrace_u32(buf + 32);
    r.header_count = millrace_u32(buf + 36);
    if (r.topic_len == MILLRACE_ABSENT || !millrace_take(buf, len, &at, r.topic_len, &topic) ||
        !millrace_take(buf, len, &at, r.key_len, &r.key) || !millrace_take(buf, len, &at, r.value_len, &r.value)) {
        millrace_reject(bad, sizeof bad - 1);
        return 0;
    }
    r.topic = (const char *)topic;
    r.headers = buf + at;
    r.headers_len = len - at;
    return millrace_transform(&r);
}

#endif
