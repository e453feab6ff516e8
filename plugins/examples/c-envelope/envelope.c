/* c-envelope: an ABI v1 plugin in C (clang + wasi-libc), proving the ABI is language-neutral.
 *
 * For every record it emits
 *   - a point `kafka_records,topic=<topic> bytes=<value size>i,headers=<count>i,partition=<p>i [ts]`
 *   - a document in index `envelope-<topic>` with id `<topic>-<partition>-<offset>`:
 *     {"topic":..,"partition":..,"offset":..,"timestamp":..,"key_hex":..,"headers":[names],"value":<value>}
 *     where the value is embedded as JSON if it is a JSON object, as a string of its size otherwise;
 * and rejects tombstones (records without a value).
 */
#include <stdio.h>

#include "millrace.h"

static int is_json_object(const uint8_t *v, uint32_t n) {
    while (n && (*v == ' ' || *v == '\n' || *v == '\t' || *v == '\r')) { v++; n--; }
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\n' || v[n - 1] == '\t' || v[n - 1] == '\r')) n--;
    return n >= 2 && v[0] == '{' && v[n - 1] == '}';
}

/* Appends to a growing buffer; returns 0 when out of memory. */
typedef struct { char *p; size_t len, cap; } buf_t;
static int put(buf_t *b, const void *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) return 0;
        b->p = p; b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return 1;
}
static int puts_(buf_t *b, const char *s) { return put(b, s, strlen(s)); }

/* Topic names are [a-zA-Z0-9._-]: safe in JSON strings, index names (lower-cased) and tags. */
int millrace_transform(const millrace_record *r) {
    static const char tomb[] = "tombstone: the record has no value";
    char tmp[96], index[300], id[320];
    uint32_t i, at = 0;
    buf_t doc = {0};
    int ok = 1;

    if (!r->value) { millrace_reject(tomb, sizeof tomb - 1); return 0; }

    buf_t line = {0};
    ok &= put(&line, "kafka_records,topic=", 20) && put(&line, r->topic, r->topic_len);
    snprintf(tmp, sizeof tmp, " bytes=%ui,headers=%ui,partition=%di", r->value_len, r->header_count, r->partition);
    ok &= puts_(&line, tmp);
    if (r->timestamp_ms != MILLRACE_NO_TIMESTAMP) {
        snprintf(tmp, sizeof tmp, " %lld000000", (long long)r->timestamp_ms);
        ok &= puts_(&line, tmp);
    }

    ok &= puts_(&doc, "{\"topic\":\"") && put(&doc, r->topic, r->topic_len);
    snprintf(tmp, sizeof tmp, "\",\"partition\":%d,\"offset\":%lld,\"timestamp\":%lld,\"key_hex\":", r->partition,
             (long long)r->offset, (long long)(r->timestamp_ms == MILLRACE_NO_TIMESTAMP ? -1 : r->timestamp_ms));
    ok &= puts_(&doc, tmp);
    if (r->key) {
        ok &= puts_(&doc, "\"");
        for (i = 0; i < r->key_len && i < 64; i++) {
            snprintf(tmp, sizeof tmp, "%02x", r->key[i]);
            ok &= puts_(&doc, tmp);
        }
        ok &= puts_(&doc, "\"");
    } else {
        ok &= puts_(&doc, "null");
    }
    ok &= puts_(&doc, ",\"headers\":[");
    for (i = 0; i < r->header_count; i++) {
        uint32_t name_len, value_len;
        if (r->headers_len - at < 8) break;
        name_len = millrace_u32(r->headers + at);
        value_len = millrace_u32(r->headers + at + 4);
        at += 8;
        if (name_len > r->headers_len - at) break;
        ok &= puts_(&doc, i ? ",\"" : "\"");
        for (uint32_t j = 0; j < name_len; j++) {
            char c = (char)r->headers[at + j];
            if (c >= 0x20 && c != '"' && c != '\\') ok &= put(&doc, &c, 1);
        }
        ok &= puts_(&doc, "\"");
        at += name_len + (value_len == MILLRACE_ABSENT ? 0 : value_len);
    }
    ok &= puts_(&doc, "],\"value\":");
    if (is_json_object(r->value, r->value_len)) {
        ok &= put(&doc, r->value, r->value_len);
    } else {
        snprintf(tmp, sizeof tmp, "\"(%u bytes, not a JSON object)\"", r->value_len);
        ok &= puts_(&doc, tmp);
    }
    ok &= puts_(&doc, "}");

    snprintf(index, sizeof index, "envelope-%.*s", (int)r->topic_len, r->topic);
    for (i = 0; index[i]; i++)
        if (index[i] >= 'A' && index[i] <= 'Z') index[i] = (char)(index[i] - 'A' + 'a');
    snprintf(id, sizeof id, "%.*s-%d-%lld", (int)r->topic_len, r->topic, r->partition, (long long)r->offset);

    if (!ok) {
        static const char oom[] = "out of memory";
        millrace_reject(oom, sizeof oom - 1);
    } else {
        millrace_emit_point(line.p, (uint32_t)line.len);
        millrace_emit_document(index, (uint32_t)strlen(index), doc.p, (uint32_t)doc.len, id, (uint32_t)strlen(id));
    }
    free(line.p);
    free(doc.p);
    return 0;
}
