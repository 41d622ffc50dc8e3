package policy

import "time"

// SetMaxSettleWait shortens how long Load waits for a changing file, for
// the duration of a test; it returns the function that restores it.
func SetMaxSettleWait(d time.Duration) func() {
	old := maxSettleWait
	maxSettleWait = d
	return func() { maxSettleWait = old }
}
