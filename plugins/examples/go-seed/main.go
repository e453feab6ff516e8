// Command go-seed is the seed router written the way the seed design's Go authors wrote plugins: the raw
// seed contract (exports allocate, deallocate, process_data; imports env.host_log,
// env.host_send_to_influx, env.host_send_to_es), pointers by hand, no SDK, standard Go instead of TinyGo
// (//go:wasmexport and //go:wasmimport in place of TinyGo's //export). It behaves as
// plugins/examples/seed-compat (Rust): millrace runs such modules unmodified. The seed contract cannot
// reject a record: unknown records are logged and produce no output.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -o go_seed.wasm .
package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"unsafe"
)

//go:wasmimport env host_log
func hostLog(ptr unsafe.Pointer, size uint32)

//go:wasmimport env host_send_to_influx
func hostSendToInflux(ptr unsafe.Pointer, size uint32) int32

//go:wasmimport env host_send_to_es
func hostSendToES(indexPtr unsafe.Pointer, indexSize uint32, docPtr unsafe.Pointer, docSize uint32) int32

func log(msg string) {
	hostLog(unsafe.Pointer(unsafe.StringData(msg)), uint32(len(msg)))
}

// buffers keeps what allocate handed out alive until deallocate (Go's collector does not move memory).
var buffers = map[uintptr][]byte{}

//go:wasmexport allocate
func allocate(size int32) int32 {
	buf := make([]byte, max(size, 1))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	buffers[p] = buf
	return int32(p)
}

//go:wasmexport deallocate
func deallocate(ptr, size int32) {
	delete(buffers, uintptr(ptr))
}

//go:wasmexport process_data
func processData(ptr, length int32) {
	buf, ok := buffers[uintptr(ptr)]
	if !ok || int(length) > len(buf) {
		log("process_data: unknown buffer")
		return
	}
	data := buf[:length]
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		log("invalid JSON: " + err.Error())
		return
	}
	switch v["type"] {
	case "metric":
		source, ok1 := v["source"].(string)
		value, ok2 := v["value"].(float64)
		if !ok1 || !ok2 {
			log("metric without source or value")
			return
		}
		unit, ok := v["unit"].(string)
		if !ok {
			unit = "none"
		}
		esc := strings.NewReplacer(",", `\,`, " ", `\ `, "=", `\=`)
		line := fmt.Sprintf("env_metrics,source=%s,unit=%s value=%v", esc.Replace(source), esc.Replace(unit), value)
		if ts, ok := v["timestamp"].(float64); ok {
			line += fmt.Sprintf(" %d", int64(ts)*1_000_000)
		}
		if hostSendToInflux(unsafe.Pointer(unsafe.StringData(line)), uint32(len(line))) != 0 {
			log("InfluxDB output refused")
		}
	case "log":
		service, ok := v["service"].(string)
		if !ok {
			log("log without service")
			return
		}
		index := strings.ToLower(service) + "-logs-daily"
		fmt.Printf("routing a log of %s to %s\n", service, index)
		if hostSendToES(unsafe.Pointer(unsafe.StringData(index)), uint32(len(index)), unsafe.Pointer(unsafe.SliceData(data)), uint32(len(data))) != 0 {
			log("Elasticsearch output refused")
		}
	default:
		log(fmt.Sprintf("unknown record type %v", v["type"]))
	}
}

func main() {}
