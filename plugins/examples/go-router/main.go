// Command go-router is the seed design's router written against the Go SDK, with the same behaviour and
// the same outputs as plugins/examples/seed-router (Rust), so the two can be compared record for record:
//
//   - {"type":"metric","source":S,"unit":U,"value":V[,"timestamp":ms]} -> InfluxDB point
//     env_metrics,source=S,unit=U value=V [ts]
//   - {"type":"log","service":S,...} -> the record, as a document in index S-logs-daily
//   - anything else -> rejected (dead-letter topic) with the reason.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -o go_router.wasm .
package main

import (
	millrace "millrace.dev/sdk"
)

type incoming struct {
	Type      *string  `json:"type"`
	Source    *string  `json:"source"`
	Unit      *string  `json:"unit"`
	Value     *float64 `json:"value"`
	Service   *string  `json:"service"`
	Timestamp *int64   `json:"timestamp"`
}

// route sends metrics to InfluxDB, logs to Elasticsearch and anything else to the dead-letter topic.
func route(r millrace.Record, out *millrace.Output) error {
	var msg incoming
	if err := r.JSON(&msg); err != nil {
		return err
	}
	if msg.Type == nil {
		return millrace.Reject("record without `type`")
	}
	switch *msg.Type {
	case "metric":
		if msg.Source == nil {
			return millrace.Reject("metric without `source`")
		}
		if msg.Value == nil {
			return millrace.Reject("metric without a numeric `value`")
		}
		unit := "none"
		if msg.Unit != nil {
			unit = *msg.Unit
		}
		p := millrace.NewPoint("env_metrics").Tag("source", *msg.Source).Tag("unit", unit).Float("value", *msg.Value)
		if msg.Timestamp != nil {
			p.TimestampMs(*msg.Timestamp)
		}
		out.Point(p)
		return nil
	case "log":
		if msg.Service == nil {
			return millrace.Reject("log without `service`")
		}
		service := *msg.Service
		if !usableInIndex(service) {
			return millrace.Rejectf("service name `%s` is not usable in an index name", service)
		}
		out.DocumentJSON(asciiLower(service)+"-logs-daily", r.Value, "")
		return nil
	default:
		return millrace.Rejectf("unknown record type `%s`", *msg.Type)
	}
}

// usableInIndex: ASCII letters, digits, '-' and '_', at least one.
func usableInIndex(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

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

func init() { millrace.Register(route) }

func main() {}
