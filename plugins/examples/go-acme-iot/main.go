// Command go-acme-iot is plugins/examples/acme-iot (Rust) written against the Go SDK, with the same
// outputs for the same records, so the two can be compared. ACME's devices send nested JSON like
//
//	{"device": {"id": "d-17", "site": "Berlin", "fw": "1.4.2"},
//	 "ts": "2026-11-22T10:00:00.250Z",
//	 "readings": {"temp_f": 70.3, "humidity_pct": 41, "battery": {"mv": 3012}, "door_open": false},
//	 "status": "ok"}
//
// and want, in InfluxDB, one point per message with an allowlist of tags and every numeric or boolean
// reading flattened into fields, in SI units:
//
//	acme_iot,device_id=d-17,site=berlin,fw=1.4.2 battery_v=3.012,door_open=false,humidity_pct=41i,temp_c=21.278 <ns>
//
// Messages with a status other than "ok" are also indexed as events (acme-iot-events) for alerting.
// Timestamps may be RFC 3339 text, or epoch numbers in seconds or milliseconds.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -o go_acme_iot.wasm .
package main

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"

	millrace "millrace.dev/sdk"
)

// tags are the flattened paths kept as tags, and their tag names. Everything else textual is dropped: tag
// cardinality is the client's cost, so it is an explicit allowlist.
var tags = []struct{ path, tag string }{
	{"device.id", "device_id"},
	{"device.site", "site"},
	{"device.fw", "fw"},
}

// units are the conversions applied to flattened field names: suffix, new suffix, factor, offset.
var units = []struct {
	suffix, newSuffix string
	factor, offset    float64
}{
	{"_f", "_c", 5.0 / 9.0, -32.0},
	{"_mv", "_v", 0.001, 0},
	{"_ms", "_s", 0.001, 0},
}

type field struct {
	name  string
	value any // bool or json.Number
}

func transform(r millrace.Record, out *millrace.Output) error {
	msg, err := decodeObject(r)
	if err != nil {
		return err
	}
	point := millrace.NewPoint("acme_iot")
	for _, t := range tags {
		if s, ok := lookup(msg, t.path).(string); ok {
			point.Tag(t.tag, asciiLower(s))
		}
	}
	readings, ok := msg["readings"].(map[string]any)
	if !ok {
		return millrace.Reject("message without `readings`")
	}
	var fields []field
	fields = flatten("", readings, fields)
	if len(fields) == 0 {
		return millrace.Reject("no numeric or boolean readings")
	}
	for _, f := range fields {
		switch v := f.value.(type) {
		case bool:
			point.Bool(f.name, v)
		case json.Number:
			newName, factor, offset, converted := convert(f.name)
			if i, err := strconv.ParseInt(string(v), 10, 64); err == nil && !converted {
				point.Int(f.name, i)
				continue
			}
			x, err := strconv.ParseFloat(string(v), 64)
			if err != nil {
				x = math.NaN() // out of float range: left out, as Rust's as_f64 would give inf
			}
			if converted {
				point.Float(newName, round((x+offset)*factor))
			} else {
				point.Float(f.name, x)
			}
		}
	}
	var tsNs int64
	if v, ok := msg["ts"]; ok {
		ns, ok := parseTimestamp(v)
		if !ok {
			text, _ := json.Marshal(v)
			return millrace.Rejectf("unparseable timestamp %s", text)
		}
		tsNs = ns
	} else {
		if !r.HasTimestamp {
			return millrace.Reject("no `ts` and no record timestamp")
		}
		tsNs = r.TimestampMs * 1_000_000
	}
	out.Point(point.TimestampNs(tsNs))

	if status, ok := msg["status"].(string); ok && status != "ok" {
		msg["@timestamp"] = tsNs / 1_000_000
		if err := out.Document("acme-iot-events", msg); err != nil {
			return err
		}
		out.Log(millrace.LevelInfo, "event with status "+status)
	}
	return nil
}

func init() { millrace.Register(transform) }

func main() {}

// decodeObject parses the value as one JSON object, keeping numbers as written (integers stay integers).
func decodeObject(r millrace.Record) (map[string]any, error) {
	if r.Value == nil {
		return nil, millrace.Reject("record has no value")
	}
	dec := json.NewDecoder(bytes.NewReader(r.Value))
	dec.UseNumber()
	var msg map[string]any
	if err := dec.Decode(&msg); err != nil {
		return nil, millrace.Rejectf("invalid JSON: %v", err)
	}
	if msg == nil {
		return nil, millrace.Reject("invalid JSON: not an object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, millrace.Reject("invalid JSON: trailing characters")
	}
	return msg, nil
}

func lookup(msg map[string]any, path string) any {
	var v any = msg
	for _, p := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		if v, ok = m[p]; !ok {
			return nil
		}
	}
	return v
}

// flatten turns nested objects into a_b_c names, keeping numbers and booleans, in key order.
func flatten(prefix string, obj map[string]any, out []field) []field {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		name := k
		if prefix != "" {
			name = prefix + "_" + k
		}
		switch v := obj[k].(type) {
		case map[string]any:
			out = flatten(name, v, out)
		case json.Number, bool:
			out = append(out, field{name, v})
		}
	}
	return out
}

func convert(name string) (newName string, factor, offset float64, ok bool) {
	for _, u := range units {
		if stem, found := strings.CutSuffix(name, u.suffix); found {
			return stem + u.newSuffix, u.factor, u.offset, true
		}
	}
	return "", 0, 0, false
}

func round(x float64) float64 { return math.Round(x*1000) / 1000 }

// asciiLower lowercases ASCII letters only (as Rust's to_ascii_lowercase).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// saturate converts like Rust's `as i64`: NaN is 0, out of range values saturate.
func saturate(x float64) int64 {
	switch {
	case math.IsNaN(x):
		return 0
	case x >= math.MaxInt64:
		return math.MaxInt64
	case x <= math.MinInt64:
		return math.MinInt64
	}
	return int64(x)
}

// parseTimestamp reads RFC 3339 text (2026-11-22T10:00:00.250Z, ...+01:00), or epoch seconds or
// milliseconds, into nanoseconds since the epoch.
func parseTimestamp(v any) (int64, bool) {
	switch v := v.(type) {
	case json.Number:
		if x, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			scale := int64(1_000_000)
			if x > -100_000_000_000 && x < 100_000_000_000 {
				scale = 1_000_000_000
			}
			if x != 0 && (x > math.MaxInt64/scale || x < math.MinInt64/scale) {
				return 0, false
			}
			return x * scale, true
		}
		x, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return 0, false
		}
		// Before 2001-09-09 in ms is after 5138 in s: numbers below 1e11 are seconds.
		if math.Abs(x) < 1e11 {
			return saturate(x * 1e9), true
		}
		return saturate(x * 1e6), true
	case string:
		return parseRFC3339(v)
	}
	return 0, false
}

func parseRFC3339(s string) (int64, bool) {
	b := s
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || (b[10] != 'T' && b[10] != 't' && b[10] != ' ') || b[13] != ':' || b[16] != ':' {
		return 0, false
	}
	bad := false
	num := func(from, to int) int64 {
		if to > len(s) {
			bad = true
			return 0
		}
		n, err := strconv.ParseInt(s[from:to], 10, 64)
		if err != nil {
			bad = true
		}
		return n
	}
	y, mo, d, h, mi, sec := num(0, 4), num(5, 7), num(8, 10), num(11, 13), num(14, 16), num(17, 19)
	if bad || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 {
		return 0, false
	}
	i := 19
	var nanos int64
	if i < len(b) && b[i] == '.' {
		i++
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		frac := s[start:i]
		if frac == "" {
			return 0, false
		}
		frac = (frac + "000000000")[:9]
		n, err := strconv.ParseInt(frac, 10, 64)
		if err != nil {
			return 0, false
		}
		nanos = n
	}
	if i >= len(b) {
		return 0, false
	}
	var offsetS int64
	switch c := b[i]; {
	case (c == 'Z' || c == 'z') && i+1 == len(b):
	case (c == '+' || c == '-') && len(b) == i+6 && b[i+3] == ':':
		offsetS = num(i+1, i+3)*3600 + num(i+4, i+6)*60
		if bad {
			return 0, false
		}
		if c == '-' {
			offsetS = -offsetS
		}
	default:
		return 0, false
	}
	secs := daysFromCivil(y, mo, d)*86_400 + h*3600 + mi*60 + sec - offsetS
	return secs*1_000_000_000 + nanos, true
}

// daysFromCivil is the number of days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
// algorithm).
func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := y
	if y < 0 {
		era = y - 399
	}
	era /= 400
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146_097 + doe - 719_468
}
