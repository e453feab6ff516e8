// Command hostile-go is a test fixture (runtime/tests/go_plugins.rs): a Go plugin that misbehaves on
// request, to check what a Go author sees when a plugin panics, allocates without bound, exits or loops.
// The record's value names the misbehaviour; anything else emits `ok n=1i`.
package main

import (
	"os"

	millrace "millrace.dev/sdk"
)

var keep [][]byte

func misbehave(r millrace.Record, out *millrace.Output) error {
	switch string(r.Value) {
	case "panic":
		panic("go plugin panics on purpose")
	case "nil-map":
		var m map[string]int
		m["x"] = 1
	case "memory":
		for i := 0; i < 1000; i++ {
			keep = append(keep, make([]byte, 1<<20))
		}
	case "exit":
		os.Exit(3)
	case "loop":
		for {
		}
	}
	out.Point(millrace.NewPoint("ok").Int("n", 1))
	return nil
}

func init() { millrace.Register(misbehave) }

func main() {}
