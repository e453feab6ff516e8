//go:build !wasip1

// Native tests: they run against the host stubs of testing.go, which GOOS=wasip1 builds leave out.

package millrace_test

import (
	"fmt"

	millrace "millrace.dev/sdk"
)

// A transform from a JSON reading to a temperature point, with a reject for impossible values.
func transform(r millrace.Record, out *millrace.Output) error {
	var reading struct {
		Sensor  string  `json:"sensor"`
		Celsius float64 `json:"celsius"`
	}
	if err := r.JSON(&reading); err != nil {
		return err
	}
	if reading.Celsius < -273.15 {
		return millrace.Reject("below absolute zero")
	}
	out.Point(millrace.NewPoint("temperature").Tag("sensor", reading.Sensor).Float("celsius", reading.Celsius))
	return nil
}

func Example() {
	// In the plugin: func init() { millrace.Register(transform) }; here the same function runs natively.
	o := millrace.Run(transform, millrace.JSONRecord(`{"sensor":"s 1","celsius":21.5}`))
	fmt.Println(o.Points)
	o = millrace.Run(transform, millrace.JSONRecord(`{"sensor":"s1","celsius":-300}`))
	fmt.Println(o.Rejected, o.Reason)
	// Output:
	// [temperature,sensor=s\ 1 celsius=21.5]
	// true below absolute zero
}

func ExamplePoint() {
	p := millrace.NewPoint("env_metrics").
		Tag("source", "sensor 1").
		Tag("unit", "°C").
		Float("value", 21.0).
		String("note", `said "hi"`).
		TimestampMs(1_700_000_000_123)
	fmt.Println(p.Line())
	// Output: env_metrics,source=sensor\ 1,unit=°C value=21,note="said \"hi\"" 1700000000123000000
}
