//go:build !wasip1

// Host stubs for unit tests: run a transform natively over a [TestRecord] and look at what it emitted,
// exactly as the host would have received it (the record goes through the ABI encoding and back).

package millrace

import (
	"encoding/binary"
	"math"
)

// TestRecord is a record to feed a transform in tests; build one with [JSONRecord] or [ValueRecord] and
// set the other fields as needed. A nil Key means no key, a nil Value a tombstone.
type TestRecord struct {
	Topic       string
	Partition   int32
	Offset      int64
	TimestampMs *int64
	Key         []byte
	Value       []byte
	Headers     []Header
}

// DefaultTestTimestampMs is the timestamp [ValueRecord] gives records: 2023-11-14T22:13:20Z.
const DefaultTestTimestampMs int64 = 1_700_000_000_000

// JSONRecord is a record on topic "test" whose value is json (not checked: malformed JSON is a fine test
// input), with timestamp [DefaultTestTimestampMs].
func JSONRecord(json string) TestRecord { return ValueRecord([]byte(json)) }

// ValueRecord is a record on topic "test" with this value and timestamp [DefaultTestTimestampMs].
func ValueRecord(value []byte) TestRecord {
	ts := DefaultTestTimestampMs
	if value == nil {
		value = []byte{}
	}
	return TestRecord{Topic: "test", TimestampMs: &ts, Value: value}
}

// WithTimestampMs returns the record with this timestamp.
func (r TestRecord) WithTimestampMs(ms int64) TestRecord {
	r.TimestampMs = &ms
	return r
}

// WithoutTimestamp returns the record without a timestamp.
func (r TestRecord) WithoutTimestamp() TestRecord {
	r.TimestampMs = nil
	return r
}

// WithHeader returns the record with one more header (value nil: a header without value).
func (r TestRecord) WithHeader(name string, value []byte) TestRecord {
	r.Headers = append(append([]Header(nil), r.Headers...), Header{Name: name, Value: value})
	return r
}

// Encode returns the ABI v1 encoding of the record, as the host writes it into guest memory.
func (r TestRecord) Encode() []byte {
	le := binary.LittleEndian
	optLen := func(b []byte) uint32 {
		if b == nil {
			return absent
		}
		return uint32(len(b))
	}
	ts := int64(math.MinInt64)
	if r.TimestampMs != nil {
		ts = *r.TimestampMs
	}
	b := make([]byte, 0, 64+len(r.Topic)+len(r.Key)+len(r.Value))
	b = le.AppendUint64(b, uint64(r.Offset))
	b = le.AppendUint64(b, uint64(ts))
	b = le.AppendUint32(b, uint32(r.Partition))
	b = le.AppendUint32(b, 0)
	b = le.AppendUint32(b, uint32(len(r.Topic)))
	b = le.AppendUint32(b, optLen(r.Key))
	b = le.AppendUint32(b, optLen(r.Value))
	b = le.AppendUint32(b, uint32(len(r.Headers)))
	b = append(b, r.Topic...)
	b = append(b, r.Key...)
	b = append(b, r.Value...)
	for _, h := range r.Headers {
		b = le.AppendUint32(b, uint32(len(h.Name)))
		b = le.AppendUint32(b, optLen(h.Value))
		b = append(b, h.Name...)
		b = append(b, h.Value...)
	}
	return b
}

// TestDocument is a document as the host received it; ID is empty when the host assigns it.
type TestDocument struct {
	Index string
	Body  string
	ID    string
}

// TestLog is a log line as the host received it.
type TestLog struct {
	Level   Level
	Message string
}

// Outcome is everything a transform emitted for one record.
type Outcome struct {
	// Points are lines of line protocol.
	Points    []string
	Documents []TestDocument
	Logs      []TestLog
	// Rejected tells whether the record was rejected (the host then discards its outputs), and Reason why.
	Rejected bool
	Reason   string
}

// Run runs t over record natively and returns what it emitted. Not safe for concurrent use (the stubs
// collect into one outcome, as one sandbox instance runs one record at a time).
func Run(t Transform, record TestRecord) Outcome {
	return RunEncoded(t, record.Encode())
}

// RunEncoded runs t over an already encoded record (for benchmarks that encode once, or to test what a
// malformed encoding does).
func RunEncoded(t Transform, encoded []byte) Outcome {
	o := Outcome{}
	collector = &o
	defer func() { collector = nil }()
	run(encoded, t)
	return o
}
