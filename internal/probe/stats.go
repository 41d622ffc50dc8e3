package probe

import (
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram range: 1 µs to 1 h with 3 significant digits (0.1 % error).
const (
	histLowest  = 1
	histHighest = int64(time.Hour / time.Microsecond)
	histSigFigs = 3
)

// Summary describes a set of durations. Percentiles come from an HDR
// histogram (within 0.1 % and clamped to [Min, Max]); Min, Max, Mean and
// Jitter are exact.
type Summary struct {
	Count int
	Min   time.Duration
	P50   time.Duration
	P90   time.Duration
	P99   time.Duration
	Max   time.Duration
	Mean  time.Duration
	// Jitter is the mean absolute difference of consecutive samples (RFC
	// 3550 style, without smoothing), in recording order; 0 for fewer than
	// two samples.
	Jitter time.Duration
}

// Recorder accumulates durations in bounded memory. The zero value is not
// usable: call [NewRecorder]. A Recorder is not safe for concurrent use.
type Recorder struct {
	h        *hdrhistogram.Histogram
	n        int
	min, max time.Duration
	sum      time.Duration
	prev     time.Duration
	absDiff  time.Duration
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder {
	return &Recorder{h: hdrhistogram.New(histLowest, histHighest, histSigFigs)}
}

// Record adds one sample. Negative samples count as 0, samples over an hour
// as an hour.
func (r *Recorder) Record(d time.Duration) {
	d = max(0, min(d, time.Hour))
	if r.n == 0 || d < r.min {
		r.min = d
	}
	if d > r.max {
		r.max = d
	}
	if r.n > 0 {
		diff := d - r.prev
		if diff < 0 {
			diff = -diff
		}
		r.absDiff += diff
	}
	r.prev = d
	r.sum += d
	r.n++
	_ = r.h.RecordValue(int64(d / time.Microsecond)) // in range by construction
}

// Summary returns the statistics of the samples so far; the zero Summary
// when there are none.
func (r *Recorder) Summary() Summary {
	if r.n == 0 {
		return Summary{}
	}
	s := Summary{Count: r.n, Min: r.min, Max: r.max, Mean: r.sum / time.Duration(r.n)}
	q := func(p float64) time.Duration {
		d := time.Duration(r.h.ValueAtQuantile(p)) * time.Microsecond
		return max(r.min, min(d, r.max))
	}
	s.P50, s.P90, s.P99 = q(50), q(90), q(99)
	if r.n > 1 {
		s.Jitter = r.absDiff / time.Duration(r.n-1)
	}
	return s
}

// Summarize is [Recorder] over a slice, in order.
func Summarize(samples []time.Duration) Summary {
	r := NewRecorder()
	for _, d := range samples {
		r.Record(d)
	}
	return r.Summary()
}

// LossPct is failures as a percentage of attempts; 0 when there were none.
func LossPct(failures, attempts int) float64 {
	if attempts == 0 {
		return 0
	}
	return 100 * float64(failures) / float64(attempts)
}
