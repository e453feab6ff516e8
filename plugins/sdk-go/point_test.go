//go:build !wasip1

// Native tests: they run against the host stubs of testing.go, which GOOS=wasip1 builds leave out.

package millrace

import (
	"math"
	"testing"
)

func TestEscapesPerLineProtocol(t *testing.T) {
	p := NewPoint("my meas,x").
		Tag("t k", "a=b,c").
		Tag("empty", "").
		Tag("", "v").
		Float("f", 1.5).
		Int("i", 2).
		Uint("u", 3).
		Bool("b", true).
		String("s", "say \"hi\"\\").
		Float("nan", math.NaN()).
		Float("inf", math.Inf(-1)).
		TimestampMs(1_700_000_000_000)
	// The same line as the Rust SDK's escapes_per_line_protocol test.
	want := `my\ meas\,x,t\ k=a\=b\,c f=1.5,i=2i,u=3u,b=true,s="say \"hi\"\\" 1700000000000000000`
	if got := p.Line(); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestNewlinesAndEqualsSigns(t *testing.T) {
	got := NewPoint("m=1\nx").Tag("k\n", "v\n").String("f=k", "a\nb").Line()
	want := `m=1\nx,k\n=v\n f\=k="a\nb"`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestTagsAddedAfterFieldsLandBeforeThem(t *testing.T) {
	p := NewPoint("m").Int("f", 1).Tag("t", "v").Int("g", 2).Tag("u", "w")
	if got := p.Line(); got != "m,t=v,u=w f=1i,g=2i" {
		t.Fatal(got)
	}
	if !p.HasFields() || NewPoint("m").Tag("t", "v").HasFields() {
		t.Fatal("HasFields")
	}
}

func TestFloatsAreWrittenAsRustWritesThem(t *testing.T) {
	for _, c := range []struct {
		v    float64
		want string
	}{
		{21.0, "m v=21"},
		{0.1, "m v=0.1"},
		{-0.5, "m v=-0.5"},
		{1e21, "m v=1000000000000000000000"},
		{1e-7, "m v=0.0000001"},
		{3.012, "m v=3.012"},
	} {
		if got := NewPoint("m").Float("v", c.v).Line(); got != c.want {
			t.Errorf("%v: got %s, want %s", c.v, got, c.want)
		}
	}
}

func TestTimestampsSaturate(t *testing.T) {
	if got := NewPoint("m").Int("v", 1).TimestampMs(math.MaxInt64 / 10).Line(); got != "m v=1i 9223372036854775807" {
		t.Fatal(got)
	}
	if got := NewPoint("m").Int("v", 1).TimestampMs(-5).Line(); got != "m v=1i -5000000" {
		t.Fatal(got)
	}
}
