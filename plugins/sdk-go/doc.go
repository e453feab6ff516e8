// Package millrace writes millrace plugins in plain Go.
//
// A plugin is one function from a [Record] (a Kafka record: value, key, headers, topic, partition, offset,
// timestamp) to outputs: InfluxDB points built with [NewPoint], Elasticsearch/OpenSearch documents, log
// lines, or a [Reject] that sends the record to the dead-letter topic with a reason. [Register] makes the
// function the module's entry point (millrace ABI v1, see plugins/ABI.md); authors never touch pointers
// or unsafe.
//
//	package main
//
//	import millrace "millrace.dev/sdk"
//
//	func transform(r millrace.Record, out *millrace.Output) error {
//		var reading struct {
//			Sensor  string  `json:"sensor"`
//			Celsius float64 `json:"celsius"`
//		}
//		if err := r.JSON(&reading); err != nil {
//			return err // rejected with the parse error
//		}
//		if reading.Celsius < -273.15 {
//			return millrace.Reject("below absolute zero")
//		}
//		out.Point(millrace.NewPoint("temperature").Tag("sensor", reading.Sensor).Float("celsius", reading.Celsius))
//		return nil
//	}
//
//	func init() { millrace.Register(transform) }
//
//	func main() {}
//
// Build it as a WASI reactor (the Go runtime is initialised once per instance by _initialize):
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -o plugin.wasm .
//
// Under GOOS=wasip1 the outputs go to the host through the ABI's imports (file abi_wasip1.go). Everywhere
// else they go to in-process stubs, so [Run] exercises the same function natively with plain go test:
//
//	outcome := millrace.Run(transform, millrace.JSONRecord(`{"sensor":"s1","celsius":21.5}`))
//	// outcome.Points == []string{"temperature,sensor=s1 celsius=21.5"}
//
// Any error returned by the transform rejects the record: a [Reject] with its reason as is, any other
// error with its Error() text. A panic is not a reject: it traps the instance and the host reports the
// record as failed (kind trap), as for a Rust plugin.
package millrace

// ABIVersion is the millrace plugin ABI this package implements.
const ABIVersion = 1

// Transform is the signature of a plugin: it reads one record and writes its outputs to out. A non-nil
// error rejects the record; its outputs are then discarded by the host.
type Transform func(r Record, out *Output) error
