//go:build !wasip1

// The host boundary everywhere but GOOS=wasip1: the outputs feed the collector of [Run], so a plugin's
// logic runs natively under go test, through the same code paths as in the sandbox.

package millrace

// collector is the outcome [Run] is filling; outside Run outputs are dropped.
var collector *Outcome

func hostEmitPoint(line []byte) int32 {
	if collector != nil {
		collector.Points = append(collector.Points, string(line))
	}
	return 0
}

func hostEmitDocument(index string, body []byte, id string) int32 {
	if collector != nil {
		collector.Documents = append(collector.Documents, TestDocument{Index: index, Body: string(body), ID: id})
	}
	return 0
}

func hostLog(level int32, message string) {
	if collector != nil {
		collector.Logs = append(collector.Logs, TestLog{Level: Level(level), Message: message})
	}
}

func hostReject(reason string) {
	if collector != nil && !collector.Rejected {
		collector.Rejected, collector.Reason = true, reason
	}
}
