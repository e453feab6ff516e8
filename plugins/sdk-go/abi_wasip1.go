//go:build wasip1

// The host boundary under GOOS=wasip1: the ABI v1 exports (millrace_abi_version, millrace_input,
// millrace_process) and the imports of module "millrace". This is the only file with pointers and unsafe.

package millrace

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"unsafe"
)

//go:wasmimport millrace emit_point
func wasmEmitPoint(ptr unsafe.Pointer, len uint32) int32

//go:wasmimport millrace emit_document
func wasmEmitDocument(indexPtr unsafe.Pointer, indexLen uint32, bodyPtr unsafe.Pointer, bodyLen uint32, idPtr unsafe.Pointer, idLen uint32) int32

//go:wasmimport millrace log
func wasmLog(level int32, ptr unsafe.Pointer, len uint32)

//go:wasmimport millrace reject
func wasmReject(ptr unsafe.Pointer, len uint32)

// The host only reads len bytes at each pointer, during the call, and bounds-checks them; the Go values
// stay alive across the call because they are its arguments. An empty string or slice passes (nil, 0).

func bytesPtr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(unsafe.SliceData(b))
}

func strPtr(s string) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(unsafe.StringData(s))
}

func hostEmitPoint(line []byte) int32 {
	return wasmEmitPoint(bytesPtr(line), uint32(len(line)))
}

func hostEmitDocument(index string, body []byte, id string) int32 {
	return wasmEmitDocument(strPtr(index), uint32(len(index)), bytesPtr(body), uint32(len(body)), strPtr(id), uint32(len(id)))
}

func hostLog(level int32, message string) {
	wasmLog(level, strPtr(message), uint32(len(message)))
}

func hostReject(reason string) {
	wasmReject(strPtr(reason), uint32(len(reason)))
}

// statusBadInput is millrace_process's status when handed a buffer millrace_input did not return.
const statusBadInput = 2

// input is the buffer the host writes records into; it only grows, and Go's collector never moves it.
var input []byte

//go:wasmexport millrace_abi_version
func exportABIVersion() int32 { return ABIVersion }

//go:wasmexport millrace_input
func exportInput(n int32) int32 {
	if n < 1 {
		n = 1
	}
	if len(input) < int(n) {
		input = make([]byte, n)
	}
	return int32(uintptr(unsafe.Pointer(unsafe.SliceData(input))))
}

//go:wasmexport millrace_process
func exportProcess(ptr, n int32) int32 {
	if len(input) == 0 || n < 0 || int(n) > len(input) || ptr != int32(uintptr(unsafe.Pointer(unsafe.SliceData(input)))) {
		return statusBadInput
	}
	defer trapOnPanic()
	run(input[:n], registered)
	return 0
}

// sink keeps the faulting load of trapOnPanic from being optimised away.
var sink byte

// trapOnPanic turns a panic of the transform into a trap the host reports with the panic's message.
// Left alone, Go's fatal-panic path first sleeps (WASI poll_oneoff, which the sandbox does not grant), dies
// of that with "panic during panic" and never prints the message. So: the stack, then the message and
// where it was raised as the last stderr line (the host quotes the last lines in the error), then an
// out-of-bounds load, which traps (kind trap; the host replaces the instance).
func trapOnPanic() {
	v := recover()
	if v == nil {
		return
	}
	os.Stderr.Write(debug.Stack())
	fmt.Fprintf(os.Stderr, "panic: %v%s\n", v, panicSite())
	sink = *(*byte)(unsafe.Add(unsafe.Pointer(&sink), 1<<31))
}

// panicSite is " at function (file:line)" of the first frame outside the Go runtime below the panic.
func panicSite() string {
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	for {
		f, more := frames.Next()
		if f.Function != "" && !strings.HasPrefix(f.Function, "runtime.") {
			return fmt.Sprintf(" at %s (%s:%d)", f.Function, f.File, f.Line)
		}
		if !more {
			return ""
		}
	}
}
