//go:build !wasip1

// Native tests: they run against the host stubs of testing.go, which GOOS=wasip1 builds leave out.

package main

import (
	"encoding/json"
	"strings"
	"testing"

	millrace "millrace.dev/sdk"
)

// The cases of plugins/examples/acme-iot's tests, with the same expected outputs.

const msg = `{"device":{"id":"d-17","site":"Berlin","fw":"1.4.2","owner":"x"},
	"ts":"2026-11-22T10:00:00.250Z",
	"readings":{"temp_f":70.3,"humidity_pct":41,"battery":{"mv":3012},"door_open":false,"note":"n/a"},
	"status":"ok"}`

func TestFlattensConvertsAndStamps(t *testing.T) {
	o := millrace.Run(transform, millrace.JSONRecord(msg))
	want := "acme_iot,device_id=d-17,site=berlin,fw=1.4.2 battery_v=3.012,door_open=false,humidity_pct=41i,temp_c=21.278 1795341600250000000"
	if len(o.Points) != 1 || o.Points[0] != want || len(o.Documents) != 0 || o.Rejected {
		t.Fatalf("%#v", o)
	}
}

func TestBadStatusIsAlsoAnEvent(t *testing.T) {
	o := millrace.Run(transform, millrace.JSONRecord(strings.Replace(msg, `"ok"`, `"overheat"`, 1)))
	if len(o.Points) != 1 || len(o.Documents) != 1 || o.Documents[0].Index != "acme-iot-events" {
		t.Fatalf("%#v", o)
	}
	// Keys sorted and numbers as written, as serde_json writes the Rust example's event.
	want := `{"@timestamp":1795341600250,"device":{"fw":"1.4.2","id":"d-17","owner":"x","site":"Berlin"},` +
		`"readings":{"battery":{"mv":3012},"door_open":false,"humidity_pct":41,"note":"n/a","temp_f":70.3},` +
		`"status":"overheat","ts":"2026-11-22T10:00:00.250Z"}`
	if o.Documents[0].Body != want {
		t.Fatalf("got  %s\nwant %s", o.Documents[0].Body, want)
	}
	if len(o.Logs) != 1 || o.Logs[0] != (millrace.TestLog{Level: millrace.LevelInfo, Message: "event with status overheat"}) {
		t.Fatalf("%#v", o.Logs)
	}
}

func TestTimestampsInEveryAcceptedForm(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"1970-01-01T00:00:00Z", 0},
		{"2026-11-22T11:00:00.25+01:00", 1_795_341_600_250_000_000},
		{"2026-11-22t10:00:00.1234567891z", 1_795_341_600_123_456_789},
	} {
		if got, ok := parseRFC3339(c.in); !ok || got != c.want {
			t.Errorf("%s: %d %v", c.in, got, ok)
		}
	}
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"1795341600", 1_795_341_600_000_000_000},
		{"1795341600250", 1_795_341_600_250_000_000},
		{"1795341600.5", 1_795_341_600_500_000_000},
	} {
		if got, ok := parseTimestamp(json.Number(c.in)); !ok || got != c.want {
			t.Errorf("%s: %d %v", c.in, got, ok)
		}
	}
	if _, ok := parseTimestamp(json.Number("9223372036854775807")); ok {
		t.Error("an overflowing epoch must be refused")
	}
	for _, bad := range []string{"2026-13-01T00:00:00Z", "yesterday", "2026-11-22T10:00:00", "2026-11-22T10:00:00.Z", "2026-11-22T10:00:00+1:000"} {
		if _, ok := parseRFC3339(bad); ok {
			t.Errorf("%s accepted", bad)
		}
	}
	o := millrace.Run(transform, millrace.JSONRecord(`{"readings":{"a":1},"ts":"soon"}`))
	if o.Reason != `unparseable timestamp "soon"` {
		t.Fatalf("%#v", o)
	}
	o = millrace.Run(transform, millrace.JSONRecord(`{"readings":{"a":1}}`).WithTimestampMs(5))
	if len(o.Points) != 1 || o.Points[0] != "acme_iot a=1i 5000000" {
		t.Fatalf("%#v", o)
	}
}

func TestRejects(t *testing.T) {
	for _, c := range []struct{ in, reason string }{
		{`{"device":{}}`, "message without `readings`"},
		{`{"readings":{"s":"x"}}`, "no numeric or boolean readings"},
		{`{"readings":{"a":1}} x`, "invalid JSON: trailing characters"},
		{`null`, "invalid JSON: not an object"},
	} {
		if o := millrace.Run(transform, millrace.JSONRecord(c.in)); o.Reason != c.reason {
			t.Errorf("%s: %#v", c.in, o)
		}
	}
	if o := millrace.Run(transform, millrace.JSONRecord(`{"readings":{"a":1}}`).WithoutTimestamp()); o.Reason != "no `ts` and no record timestamp" {
		t.Fatalf("%#v", o)
	}
}
