package bench

import (
	"slices"
	"time"
)

// Dist summarizes a set of durations. Times are milliseconds.
type Dist struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Summarize sorts ds in place and returns its distribution (nearest-rank percentiles).
func Summarize(ds []time.Duration) Dist {
	if len(ds) == 0 {
		return Dist{}
	}
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	pct := func(p float64) float64 {
		i := int(p*float64(len(ds))+0.999999) - 1
		i = min(max(i, 0), len(ds)-1)
		return ms(ds[i])
	}
	return Dist{
		N: len(ds), Mean: ms(sum / time.Duration(len(ds))),
		P50: pct(0.50), P90: pct(0.90), P99: pct(0.99), Max: ms(ds[len(ds)-1]),
	}
}
