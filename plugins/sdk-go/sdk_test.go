//go:build !wasip1

// Native tests: they run against the host stubs of testing.go, which GOOS=wasip1 builds leave out.

package millrace

import (
	"errors"
	"reflect"
	"testing"
)

func echo(r Record, out *Output) error {
	p := NewPoint("echo").Tag("topic", r.Topic).Int("partition", int64(r.Partition)).Int("offset", r.Offset)
	if r.Key != nil {
		p.Tag("key", string(r.Key))
	}
	for _, h := range r.Headers {
		n := int64(-1)
		if h.Value != nil {
			n = int64(len(h.Value))
		}
		p.Int(h.Name, n)
	}
	if r.HasTimestamp {
		p.TimestampMs(r.TimestampMs)
	}
	out.Point(p)
	body := r.Value
	if body == nil {
		body = []byte("{}")
	}
	out.DocumentJSON("echo", body, "fixed")
	out.Log(LevelWarn, "hello")
	if _, ok := r.Header("reject"); ok {
		return Reject("asked to")
	}
	return nil
}

func TestRecordsRoundTripThroughTheABIEncoding(t *testing.T) {
	rec := JSONRecord(`{"a":1}`).WithHeader("h", []byte("xyz")).WithHeader("n", nil)
	rec.Topic, rec.Key, rec.Partition, rec.Offset = "t1", []byte("k"), 3, 99
	o := Run(echo, rec)
	want := Outcome{
		Points:    []string{"echo,topic=t1,key=k partition=3i,offset=99i,h=3i,n=-1i 1700000000000000000"},
		Documents: []TestDocument{{Index: "echo", Body: `{"a":1}`, ID: "fixed"}},
		Logs:      []TestLog{{Level: LevelWarn, Message: "hello"}},
	}
	if !reflect.DeepEqual(o, want) {
		t.Fatalf("got  %#v\nwant %#v", o, want)
	}

	o = Run(echo, ValueRecord([]byte("{}")).WithoutTimestamp().WithHeader("reject", nil))
	if o.Points[0] != "echo,topic=test partition=0i,offset=0i,reject=-1i" || !o.Rejected || o.Reason != "asked to" {
		t.Fatalf("%#v", o)
	}
}

func TestAbsentAndEmptyAreDistinguished(t *testing.T) {
	var seen Record
	grab := func(r Record, _ *Output) error { seen = r; return nil }
	Run(grab, TestRecord{Topic: "t", Key: []byte{}, Value: nil})
	if seen.Key == nil || len(seen.Key) != 0 || seen.Value != nil || !seen.IsTombstone() || seen.HasTimestamp {
		t.Fatalf("%#v", seen)
	}
	o := Run(func(r Record, _ *Output) error { _, err := r.ValueString(); return err }, TestRecord{Topic: "t"})
	if o.Reason != "record has no value" {
		t.Fatalf("%#v", o)
	}
}

func TestTruncatedEncodingsAreRejectedNotMisread(t *testing.T) {
	enc := JSONRecord("{}").WithHeader("h", []byte("v")).Encode()
	for cut := 0; cut < len(enc); cut++ {
		o := RunEncoded(echo, enc[:cut])
		if !o.Rejected || o.Reason != "malformed record encoding from the host" || len(o.Points) != 0 {
			t.Fatalf("cut %d: %#v", cut, o)
		}
	}
	// A header count far beyond what the buffer holds is refused before anything is allocated.
	huge := JSONRecord("{}").Encode()
	huge[36], huge[37], huge[38], huge[39] = 0xff, 0xff, 0xff, 0x0f
	if o := RunEncoded(echo, huge); o.Reason != "malformed record encoding from the host" {
		t.Fatalf("%#v", o)
	}
}

func TestErrorsRejectWithTheirText(t *testing.T) {
	o := Run(func(Record, *Output) error { return errors.New("plain error") }, JSONRecord("{}"))
	if !o.Rejected || o.Reason != "plain error" {
		t.Fatalf("%#v", o)
	}
	wrapped := func(Record, *Output) error { return errors.Join(errors.New("ctx"), Rejectf("n=%d", 3)) }
	if o := Run(wrapped, JSONRecord("{}")); o.Reason != "n=3" {
		t.Fatalf("a wrapped RejectError keeps its reason: %#v", o)
	}
	if o := Run(nil, JSONRecord("{}")); !o.Rejected {
		t.Fatalf("no transform registered must reject: %#v", o)
	}
}

func TestDocumentsAndJSON(t *testing.T) {
	type in struct {
		Name string `json:"name"`
	}
	tr := func(r Record, out *Output) error {
		var v in
		if err := r.JSON(&v); err != nil {
			return err
		}
		if err := out.Document("idx", map[string]any{"name": v.Name, "n": 1, "html": "<a&b>"}); err != nil {
			return err
		}
		out.PointLine("raw v=1i")
		if out.Emitted() != 2 {
			return Reject("emitted count")
		}
		return out.DocumentWithID("idx", "id-1", func() {})
	}
	o := Run(tr, JSONRecord(`{"name":"a\"b"}`))
	if len(o.Documents) != 1 || o.Documents[0].Body != `{"html":"<a&b>","n":1,"name":"a\"b"}` || o.Points[0] != "raw v=1i" {
		t.Fatalf("%#v", o)
	}
	if !o.Rejected || o.Reason != "serializing document: json: unsupported type: func()" {
		t.Fatalf("%#v", o)
	}
	o = Run(tr, JSONRecord(`{"name":`))
	if o.Reason != "invalid JSON: unexpected end of JSON input" {
		t.Fatalf("%#v", o)
	}
}
