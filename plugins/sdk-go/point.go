// A builder for InfluxDB line protocol that gets the escaping right (the same rules and output as the
// Rust SDK's point.rs, so a Go and a Rust plugin emit byte-identical lines).

package millrace

import (
	"math"
	"strconv"
)

// Point is one InfluxDB point, `measurement,tag=v field=v timestamp`, built with chained calls:
//
//	p := millrace.NewPoint("env_metrics").Tag("source", "sensor 1").Float("value", 21.5).TimestampMs(ts)
//
// Measurement, tag keys and values, field keys and string field values are escaped as line protocol
// requires. Tags with an empty key or value and float fields that are not finite are left out (line
// protocol cannot express them); a point without any field is invalid and the host refuses it. Tags added
// after fields still land before the field set.
type Point struct {
	// line holds `measurement[,tags]` and, once a field was added, ` field=v[,...]`.
	line []byte
	// fieldsAt is where the field set starts (the space before it); 0 while there is none.
	fieldsAt int
	ts       int64
	hasTS    bool
}

// escape appends s escaped for line protocol: a backslash before ',' and ' ', and before '=' when eq
// (tag keys and values, field keys); a newline becomes `\n`.
func escape(out []byte, s string, eq bool) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ',' || c == ' ' || c == '\n' || (eq && c == '=') {
			out = append(out, s[start:i]...)
			if c == '\n' {
				c = 'n'
			}
			out = append(out, '\\', c)
			start = i + 1
		}
	}
	return append(out, s[start:]...)
}

// NewPoint starts a point in measurement.
func NewPoint(measurement string) *Point {
	p := &Point{line: make([]byte, 0, len(measurement)+96)}
	p.line = escape(p.line, measurement, false)
	return p
}

// Tag adds a tag (indexed, string-valued). An empty key or value is left out.
func (p *Point) Tag(key, value string) *Point {
	if key == "" || value == "" {
		return p
	}
	if p.fieldsAt == 0 {
		p.line = append(p.line, ',')
		p.line = escape(p.line, key, true)
		p.line = append(p.line, '=')
		p.line = escape(p.line, value, true)
		return p
	}
	// A tag after fields: it still belongs before the field set.
	tag := make([]byte, 0, len(key)+len(value)+2)
	tag = append(tag, ',')
	tag = escape(tag, key, true)
	tag = append(tag, '=')
	tag = escape(tag, value, true)
	rest := append(tag, p.line[p.fieldsAt:]...)
	p.line = append(p.line[:p.fieldsAt], rest...)
	p.fieldsAt += len(tag)
	return p
}

// fieldKey starts a field: the separator and the escaped key, then '='.
func (p *Point) fieldKey(key string) {
	if p.fieldsAt == 0 {
		p.fieldsAt = len(p.line)
		p.line = append(p.line, ' ')
	} else {
		p.line = append(p.line, ',')
	}
	p.line = escape(p.line, key, true)
	p.line = append(p.line, '=')
}

// Float adds a float field, written in the shortest form that reads back as the same number (21.0 is
// written `21`, which InfluxDB stores as a float). NaN and infinities are left out.
func (p *Point) Float(key string, v float64) *Point {
	if key == "" || math.IsNaN(v) || math.IsInf(v, 0) {
		return p
	}
	p.fieldKey(key)
	p.line = strconv.AppendFloat(p.line, v, 'f', -1, 64)
	return p
}

// Int adds a signed integer field (`42i`).
func (p *Point) Int(key string, v int64) *Point {
	if key == "" {
		return p
	}
	p.fieldKey(key)
	p.line = strconv.AppendInt(p.line, v, 10)
	p.line = append(p.line, 'i')
	return p
}

// Uint adds an unsigned integer field (`42u`).
func (p *Point) Uint(key string, v uint64) *Point {
	if key == "" {
		return p
	}
	p.fieldKey(key)
	p.line = strconv.AppendUint(p.line, v, 10)
	p.line = append(p.line, 'u')
	return p
}

// Bool adds a boolean field.
func (p *Point) Bool(key string, v bool) *Point {
	if key == "" {
		return p
	}
	p.fieldKey(key)
	p.line = strconv.AppendBool(p.line, v)
	return p
}

// String adds a string field; quotes and backslashes are escaped and a newline becomes `\n`.
func (p *Point) String(key, v string) *Point {
	if key == "" {
		return p
	}
	p.fieldKey(key)
	p.line = append(p.line, '"')
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '"', '\\':
			p.line = append(p.line, '\\', c)
		case '\n':
			p.line = append(p.line, '\\', 'n')
		default:
			p.line = append(p.line, c)
		}
	}
	p.line = append(p.line, '"')
	return p
}

// HasFields tells whether the point has at least one field (a point without fields is invalid).
func (p *Point) HasFields() bool { return p.fieldsAt != 0 }

// TimestampNs sets the point's timestamp in nanoseconds since the Unix epoch. Without one, the worker
// stamps the point with the record's millisecond plus nanoseconds unique per partition, offset and point.
func (p *Point) TimestampNs(ns int64) *Point {
	p.ts, p.hasTS = ns, true
	return p
}

// TimestampMs sets the point's timestamp in milliseconds since the Unix epoch (saturating).
func (p *Point) TimestampMs(ms int64) *Point {
	switch {
	case ms > math.MaxInt64/1_000_000:
		return p.TimestampNs(math.MaxInt64)
	case ms < math.MinInt64/1_000_000:
		return p.TimestampNs(math.MinInt64)
	}
	return p.TimestampNs(ms * 1_000_000)
}

// appendLine appends the point as one line of line protocol.
func (p *Point) appendLine(out []byte) []byte {
	out = append(out, p.line...)
	if p.hasTS {
		out = append(out, ' ')
		out = strconv.AppendInt(out, p.ts, 10)
	}
	return out
}

// Line returns the point as one line of line protocol.
func (p *Point) Line() string {
	return string(p.appendLine(make([]byte, 0, len(p.line)+21)))
}
