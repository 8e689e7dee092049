package api

import (
	"net/http"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// metrics are the server's Prometheus metrics, in a private registry served
// on the operator listener (Config.MetricsAddr). Label values come from
// fixed sets only (method names of the policy table, status codes,
// operation names, roles, failure reasons): never a pseudonym, an id or
// anything a client wrote.
type metrics struct {
	reg *prometheus.Registry

	grpcRequests   *prometheus.CounterVec
	grpcDuration   *prometheus.HistogramVec
	appendEvents   *prometheus.CounterVec
	appendDuration prometheus.Histogram
	authFailures   *prometheus.CounterVec
	rateLimited    *prometheus.CounterVec
	accessEvents   *prometheus.CounterVec
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		reg: reg,
		grpcRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "piledger_grpc_requests_total",
			Help: "gRPC calls handled (REST calls included: the gateway calls gRPC), by method and status code.",
		}, []string{"method", "code"}),
		grpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "piledger_grpc_request_duration_seconds",
			Help:    "Duration of gRPC calls, by method.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"method"}),
		appendEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "piledger_append_events_total",
			Help: "Events in append requests, by operation and result (recorded, duplicate, rejected, denied, limited, failed).",
		}, []string{"operation", "result"}),
		appendDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "piledger_append_duration_seconds",
			Help:    "Duration of AppendEvents calls, until the events are durably stored or rejected.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "piledger_auth_failures_total",
			Help: "Calls refused as unauthenticated, by reason.",
		}, []string{"reason"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "piledger_rate_limited_total",
			Help: "Calls refused by the per-caller rate limit, by role (none: unauthenticated callers, limited by address).",
		}, []string{"role"}),
		accessEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "piledger_access_events_total",
			Help: "OPERATION_ACCESS events the ledger recorded for reads of people's records, by method.",
		}, []string{"method"}),
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "piledger_build_info",
		Help: "Build information; the value is always 1.",
	}, []string{"version", "revision", "goversion"})
	version, revision := "(devel)", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	buildInfo.WithLabelValues(version, revision, runtime.Version()).Set(1)
	reg.MustRegister(m.grpcRequests, m.grpcDuration, m.appendEvents, m.appendDuration,
		m.authFailures, m.rateLimited, m.accessEvents, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// handler serves the registry in the Prometheus text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// methodLabel is the method as a metric label or log value: the full name
// when the policy table knows it, "unknown" otherwise, since a client can
// put anything in the method name of a call to a method that does not
// exist.
func methodLabel(method string) string {
	if _, ok := policies[method]; ok {
		return method
	}
	return "unknown"
}

// observeAppend counts the events of an AppendEvents call by operation and
// result.
func (m *metrics) observeAppend(req *piledgerv1.AppendEventsRequest, resp *piledgerv1.AppendEventsResponse, err error) {
	result := "recorded"
	switch status.Code(err) {
	case codes.OK:
	case codes.InvalidArgument:
		result = "rejected"
	case codes.Unauthenticated, codes.PermissionDenied:
		result = "denied"
	case codes.ResourceExhausted:
		result = "limited"
	default:
		result = "failed"
	}
	receipts := resp.GetReceipts()
	for i, e := range req.GetEvents() {
		op, ok := piledgerv1.Operation_name[int32(e.GetOperation())]
		if !ok {
			op = "OPERATION_UNKNOWN"
		}
		r := result
		if err == nil && i < len(receipts) && receipts[i].GetDuplicate() {
			r = "duplicate"
		}
		m.appendEvents.WithLabelValues(op, r).Inc()
	}
}
