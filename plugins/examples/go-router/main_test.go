//go:build !wasip1

// Native tests: they run against the host stubs of testing.go, which GOOS=wasip1 builds leave out.

package main

import (
	"strings"
	"testing"

	millrace "millrace.dev/sdk"
)

// The cases of plugins/examples/seed-router's tests, with the same expected outputs.

func TestMetricsBecomePoints(t *testing.T) {
	o := millrace.Run(route, millrace.JSONRecord(`{"type":"metric","source":"sensor 1","unit":"C","value":21.5,"timestamp":1700000000123}`))
	if len(o.Points) != 1 || o.Points[0] != `env_metrics,source=sensor\ 1,unit=C value=21.5 1700000000123000000` {
		t.Fatalf("%#v", o)
	}
	if len(o.Documents) != 0 || o.Rejected {
		t.Fatalf("%#v", o)
	}
	o = millrace.Run(route, millrace.JSONRecord(`{"type":"metric","source":"s","value":3}`))
	if len(o.Points) != 1 || o.Points[0] != "env_metrics,source=s,unit=none value=3" {
		t.Fatalf("%#v", o)
	}
}

func TestLogsBecomeDocumentsInTheServiceIndex(t *testing.T) {
	body := `{"type":"log","service":"Checkout","level":"error","message":"boom"}`
	o := millrace.Run(route, millrace.JSONRecord(body))
	want := millrace.TestDocument{Index: "checkout-logs-daily", Body: body}
	if len(o.Documents) != 1 || o.Documents[0] != want || o.Rejected {
		t.Fatalf("%#v", o)
	}
}

func TestEverythingElseIsRejectedWithAReason(t *testing.T) {
	for _, c := range []struct{ input, reason string }{
		{`{"type":"trace"}`, "unknown record type `trace`"},
		{`{"value":1}`, "record without `type`"},
		{`{"type":"metric","value":1}`, "metric without `source`"},
		{`{"type":"metric","source":"s"}`, "metric without a numeric `value`"},
		{`{"type":"log"}`, "log without `service`"},
		{`{"type":"log","service":"a/b"}`, "service name `a/b` is not usable in an index name"},
		{`{"type":"log","service":""}`, "service name `` is not usable in an index name"},
	} {
		o := millrace.Run(route, millrace.JSONRecord(c.input))
		if !o.Rejected || o.Reason != c.reason {
			t.Errorf("%s: %#v", c.input, o)
		}
	}
	o := millrace.Run(route, millrace.JSONRecord("{not json"))
	if !o.Rejected || !strings.HasPrefix(o.Reason, "invalid JSON") {
		t.Fatalf("%#v", o)
	}
	o = millrace.Run(route, millrace.TestRecord{Topic: "t"})
	if o.Reason != "record has no value" {
		t.Fatalf("a tombstone: %#v", o)
	}
}
