// The input record, decoded from the ABI v1 encoding the host writes into the module's memory
// (plugins/ABI.md, "Record encoding"), and its helpers (JSON, headers).

package millrace

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"unicode/utf8"
)

const (
	headerLen   = 40
	absent      = math.MaxUint32
	noTimestamp = math.MinInt64
)

// Header is one Kafka record header. Value is nil when the header has no value.
type Header struct {
	Name  string
	Value []byte
}

// Record is one Kafka record: where it came from, its key, value, headers and timestamp.
//
// Key, Value and header values point into the input buffer the host wrote: they are valid during the
// call to the transform only (copy them to keep them). Key is nil when the record has no key and Value is
// nil for a tombstone; a present but empty key or value is a non-nil empty slice.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	// TimestampMs is in milliseconds since the Unix epoch; meaningful only when HasTimestamp.
	TimestampMs  int64
	HasTimestamp bool
	Key          []byte
	Value        []byte
	Headers      []Header
}

// errMalformed rejects a record whose encoding does not parse (a host bug, never a plugin's).
var errMalformed = Reject("malformed record encoding from the host")

// errNoValue is the reject for a tombstone read as text or JSON.
var errNoValue = Reject("record has no value")

type cursor struct {
	buf []byte
	at  int
}

func (c *cursor) take(n uint32) ([]byte, bool) {
	if uint64(n) > uint64(len(c.buf)-c.at) {
		return nil, false
	}
	s := c.buf[c.at : c.at+int(n) : c.at+int(n)]
	c.at += int(n)
	return s, true
}

func (c *cursor) u32() (uint32, bool) {
	b, ok := c.take(4)
	if !ok {
		return 0, false
	}
	return binary.LittleEndian.Uint32(b), true
}

// optional reads a length-prefixed field that may be absent (length 0xFFFFFFFF): nil then.
func (c *cursor) optional(n uint32) ([]byte, bool) {
	if n == absent {
		return nil, true
	}
	return c.take(n)
}

// decodeRecord decodes the ABI v1 encoding of a record.
func decodeRecord(buf []byte) (Record, error) {
	var r Record
	if len(buf) < headerLen {
		return r, errMalformed
	}
	r.Offset = int64(binary.LittleEndian.Uint64(buf[0:8]))
	ts := int64(binary.LittleEndian.Uint64(buf[8:16]))
	if ts != noTimestamp {
		r.TimestampMs, r.HasTimestamp = ts, true
	}
	le := binary.LittleEndian
	r.Partition = int32(le.Uint32(buf[16:20]))
	topicLen, keyLen, valueLen, count := le.Uint32(buf[24:28]), le.Uint32(buf[28:32]), le.Uint32(buf[32:36]), le.Uint32(buf[36:40])
	c := cursor{buf: buf, at: headerLen}
	topic, ok := c.take(topicLen)
	if !ok || !utf8.Valid(topic) {
		return r, errMalformed
	}
	r.Topic = string(topic)
	if r.Key, ok = c.optional(keyLen); !ok {
		return r, errMalformed
	}
	if r.Value, ok = c.optional(valueLen); !ok {
		return r, errMalformed
	}
	// Each header takes at least 8 bytes: a count the rest cannot hold is malformed (and is not allocated).
	if uint64(count) > uint64(len(buf)-c.at)/8 {
		return r, errMalformed
	}
	if count > 0 {
		r.Headers = make([]Header, 0, count)
	}
	for i := uint32(0); i < count; i++ {
		nameLen, ok1 := c.u32()
		valLen, ok2 := c.u32()
		if !ok1 || !ok2 {
			return r, errMalformed
		}
		name, ok := c.take(nameLen)
		if !ok || !utf8.Valid(name) {
			return r, errMalformed
		}
		value, ok := c.optional(valLen)
		if !ok {
			return r, errMalformed
		}
		r.Headers = append(r.Headers, Header{Name: string(name), Value: value})
	}
	return r, nil
}

// IsTombstone tells whether the record has no value.
func (r *Record) IsTombstone() bool { return r.Value == nil }

// ValueString returns the value as UTF-8 text; a tombstone or a value that is not UTF-8 is an error that
// rejects the record when returned from the transform.
func (r *Record) ValueString() (string, error) {
	if r.Value == nil {
		return "", errNoValue
	}
	if !utf8.Valid(r.Value) {
		return "", Reject("value is not UTF-8")
	}
	return string(r.Value), nil
}

// JSON parses the value as JSON into v (as encoding/json.Unmarshal). The error, returned from the
// transform, rejects the record with "invalid JSON: ..." (or "record has no value" for a tombstone).
func (r *Record) JSON(v any) error {
	if r.Value == nil {
		return errNoValue
	}
	if err := json.Unmarshal(r.Value, v); err != nil {
		return Rejectf("invalid JSON: %v", err)
	}
	return nil
}

// Header returns the value of the first header named name, and whether there is one (a header may be
// present with a nil value).
func (r *Record) Header(name string) ([]byte, bool) {
	for _, h := range r.Headers {
		if h.Name == name {
			return h.Value, true
		}
	}
	return nil, false
}

// rejectReason is the reason a transform's error rejects a record with.
func rejectReason(err error) string {
	var rej *RejectError
	if errors.As(err, &rej) {
		return rej.Reason
	}
	return err.Error()
}
