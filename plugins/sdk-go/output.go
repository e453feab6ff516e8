// Where a transform puts its results: points, documents and log lines, each handed to the host at once.

package millrace

import (
	"bytes"
	"encoding/json"
)

// Level is the severity of a log line.
type Level int32

// Log levels, as the host numbers them.
const (
	LevelError Level = 0
	LevelWarn  Level = 1
	LevelInfo  Level = 2
	LevelDebug Level = 3
	LevelTrace Level = 4
)

// Output receives the outputs of the record being processed. The host validates each one; a malformed
// output (line protocol that does not parse, an invalid index name, a body that is not a JSON object) fails
// the whole record with the reason, so there is nothing to check here.
type Output struct {
	emitted int
	scratch []byte
}

// Emitted returns how many points and documents this record emitted so far.
func (o *Output) Emitted() int { return o.emitted }

// Point emits an InfluxDB point. Without a timestamp, the worker uses the record's millisecond plus
// nanoseconds unique per partition, offset and point (records sharing a millisecond never overwrite each
// other).
func (o *Output) Point(p *Point) {
	o.scratch = p.appendLine(o.scratch[:0])
	o.emitted++
	hostEmitPoint(o.scratch)
}

// PointLine emits an InfluxDB point given as one line of line protocol.
func (o *Output) PointLine(line string) {
	o.emitted++
	hostEmitPoint([]byte(line))
}

// Document emits a document for Elasticsearch/OpenSearch: body is serialized with encoding/json and must
// serialize to a JSON object. The host assigns a deterministic id (topic, partition, offset, output
// number), so a redelivered record overwrites its own documents.
func (o *Output) Document(index string, body any) error {
	return o.DocumentWithID(index, "", body)
}

// marshalJSON is json.Marshal without HTML escaping (`<`, `>` and `&` stay as they are, as serde_json
// writes them), so a Go and a Rust plugin produce the same bytes for the same document.
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// DocumentWithID emits a document with an id chosen by the plugin (documents with the same id overwrite
// each other); an empty id lets the host assign one.
func (o *Output) DocumentWithID(index, id string, body any) error {
	b, err := marshalJSON(body)
	if err != nil {
		return Rejectf("serializing document: %v", err)
	}
	o.DocumentJSON(index, b, id)
	return nil
}

// DocumentJSON emits a document whose body is already JSON text (for instance the record's own value);
// an empty id lets the host assign one.
func (o *Output) DocumentJSON(index string, body []byte, id string) {
	o.emitted++
	hostEmitDocument(index, body, id)
}

// Log writes a log line attributed to the plugin (rate-limited by the host). Writing to os.Stdout or
// os.Stderr works too (info and warn).
func (o *Output) Log(level Level, message string) {
	hostLog(int32(level), message)
}

// run decodes one encoded record and runs the transform over it; an error goes to the host as a reject.
func run(encoded []byte, t Transform) {
	r, err := decodeRecord(encoded)
	if err == nil {
		if t == nil {
			err = Reject("no transform registered: call millrace.Register(transform) in an init function")
		} else {
			var out Output
			err = t(r, &out)
		}
	}
	if err != nil {
		hostReject(rejectReason(err))
	}
}

// registered is the transform [Register] installed.
var registered Transform

// Register makes t the plugin's transform. Call it from an init function of package main: a WASI reactor
// runs the package initialisers in _initialize, but never main.
func Register(t Transform) { registered = t }
