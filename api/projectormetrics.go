package api

import (
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/piledger/piledger/projections"
)

// readModelStats is what the read models report to the metrics
// (*projections.Store).
type readModelStats interface {
	Position() projections.Position
	Counts() projections.Counts
	ComputedFindings() map[string]int
}

var _ readModelStats = (*projections.Store)(nil)

// readModelCollector exports the projector's position and counts and the
// findings, read at scrape time. Rule names come from the policy in force
// (operator-written names, never a client's).
type readModelCollector struct {
	rm readModelStats

	applied, entries, findings, computed *prometheus.Desc
}

func newReadModelCollector(rm readModelStats) *readModelCollector {
	return &readModelCollector{
		rm: rm,
		applied: prometheus.NewDesc("piledger_projector_applied_entries",
			"Log entries the read models have applied (entries 0 to this minus one).", nil, nil),
		entries: prometheus.NewDesc("piledger_projector_entries_total",
			"Log entries the projector has seen, by outcome (applied, duplicate, shredded, ignored).", []string{"outcome"}, nil),
		findings: prometheus.NewDesc("piledger_findings_stored_total",
			"Findings stored by the projector: rules an applied event, or a holding it destroyed, broke.", nil, nil),
		computed: prometheus.NewDesc("piledger_findings_computed",
			"Findings about open holdings past their deadline at the last sweep, by rule.", []string{"rule"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *readModelCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.applied
	ch <- c.entries
	ch <- c.findings
	ch <- c.computed
}

// Collect implements prometheus.Collector.
func (c *readModelCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.applied, prometheus.GaugeValue, float64(c.rm.Position().Size))
	n := c.rm.Counts()
	for outcome, v := range map[string]uint64{"applied": n.Applied, "duplicate": n.Duplicates, "shredded": n.Shredded, "ignored": n.Ignored} {
		ch <- prometheus.MustNewConstMetric(c.entries, prometheus.CounterValue, float64(v), outcome)
	}
	ch <- prometheus.MustNewConstMetric(c.findings, prometheus.CounterValue, float64(n.Findings))
	computed := c.rm.ComputedFindings()
	for _, rule := range slices.Sorted(maps.Keys(computed)) {
		ch <- prometheus.MustNewConstMetric(c.computed, prometheus.GaugeValue, float64(computed[rule]), rule)
	}
}
