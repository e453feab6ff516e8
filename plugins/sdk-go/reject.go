// The explicit reject: a record the plugin refuses goes to the dead-letter topic with a reason.

package millrace

import "fmt"

// RejectError refuses a record: it goes to the dead-letter topic with this reason. Create one with
// [Reject] or [Rejectf]; any other error returned by a transform rejects the record too, with its text.
type RejectError struct {
	Reason string
}

func (e *RejectError) Error() string { return e.Reason }

// Reject returns an error that rejects the record with reason.
func Reject(reason string) error { return &RejectError{Reason: reason} }

// Rejectf returns an error that rejects the record with a formatted reason.
func Rejectf(format string, args ...any) error {
	return &RejectError{Reason: fmt.Sprintf(format, args...)}
}
