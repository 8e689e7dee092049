package main

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/piledger/piledger/api/client"
)

// benchGen generates a realistic mix of valid events: every operation, with
// the fields its operation requires and some it allows, vocabulary terms
// that fit the processor, and subjects drawn uniformly from a population.
// A benchGen is not safe for concurrent use: each writer has its own.
type benchGen struct {
	rng      *rand.Rand
	subjects int
	// processor, when set, is the processor of every event (an API key is
	// bound to one processor); otherwise each event gets one of the mix.
	processor string
	// picked are the subject numbers of the last batch's events.
	picked []int
}

func newBenchGen(seed uint64, writer, subjects int, processor string) *benchGen {
	return &benchGen{rng: rand.New(rand.NewPCG(seed, uint64(writer))), subjects: subjects, processor: processor}
}

// benchProcessor is one kind of emitter with the data it handles.
type benchProcessor struct {
	id         string
	system     string
	categories []string
	purposes   []string
	basis      string
	place      string // place kind of its captures; "" when it does not capture images
}

var benchProcessors = []benchProcessor{
	{"city-police", "gate-cam", []string{"face", "video-footage", "license-plate"}, []string{"public-safety"}, "legal-duty", "public-street"},
	{"metro-transit", "fare-gates", []string{"trajectory", "payment-account", "face"}, []string{"service-provision", "fraud-prevention"}, "contract-or-hr", "transport-hub"},
	{"acme-shop", "crm", []string{"name", "phone", "address", "email", "payment-account"}, []string{"contract-performance", "marketing"}, "consent", "shop"},
	{"district-hospital", "his", []string{"medical-health", "id-number", "name", "birth-date"}, []string{"medical-treatment"}, "contract-or-hr", ""},
	{"health-office", "health-code", []string{"health-code-status", "nucleic-acid-test-result", "travel-history"}, []string{"epidemic-prevention"}, "public-health-emergency", ""},
}

// benchOps is the operation mix, in percent.
var benchOps = []struct {
	weight int
	make   func(g *benchGen, p benchProcessor, subject string) client.Event
}{
	{25, (*benchGen).collect},
	{12, (*benchGen).store},
	{15, (*benchGen).use},
	{8, (*benchGen).process},
	{6, (*benchGen).transmit},
	{4, (*benchGen).provide},
	{3, (*benchGen).entrust},
	{1, (*benchGen).disclose},
	{2, (*benchGen).transferAbroad},
	{6, (*benchGen).destroy},
	{12, (*benchGen).access},
	{3, (*benchGen).consentGranted},
	{1, (*benchGen).consentWithdrawn},
	{2, (*benchGen).purposeEnded},
}

// benchSubject is the subject reference of subject number i of the
// population.
func benchSubject(i int) string { return fmt.Sprintf("bench-%08d", i) }

// batch returns n new events, and sets g.picked to their subjects.
func (g *benchGen) batch(n int) []client.Event {
	g.picked = g.picked[:0]
	out := make([]client.Event, n)
	for i := range out {
		out[i] = g.event()
	}
	return out
}

func (g *benchGen) event() client.Event {
	p := benchProcessors[g.rng.IntN(len(benchProcessors))]
	if g.processor != "" {
		p.id = g.processor
	}
	i := g.rng.IntN(g.subjects)
	g.picked = append(g.picked, i)
	subject := benchSubject(i)
	w := g.rng.IntN(100)
	for _, op := range benchOps {
		if w < op.weight {
			return op.make(g, p, subject)
		}
		w -= op.weight
	}
	panic("bench: operation weights do not sum to 100")
}

func (g *benchGen) pick(s []string) string { return s[g.rng.IntN(len(s))] }

// cats returns 1-3 distinct categories of p.
func (g *benchGen) cats(p benchProcessor) []string {
	n := 1 + g.rng.IntN(min(3, len(p.categories)))
	perm := g.rng.Perm(len(p.categories))
	out := make([]string, n)
	for i := range out {
		out[i] = p.categories[perm[i]]
	}
	return out
}

// when is a recent time: events reach the ledger seconds to hours late.
func (g *benchGen) when() time.Time {
	return time.Now().Add(-time.Duration(g.rng.Int64N(int64(6 * time.Hour))))
}

func (g *benchGen) attrs() map[string]string {
	if g.rng.IntN(10) < 3 {
		return map[string]string{"channel": g.pick([]string{"app", "web", "counter", "kiosk"})}
	}
	return nil
}

func (g *benchGen) retention() *client.Retention {
	switch g.rng.IntN(3) {
	case 0:
		return &client.Retention{Minimum: 30 * 24 * time.Hour, KeepFor: 90 * 24 * time.Hour}
	case 1:
		return &client.Retention{KeepFor: 365 * 24 * time.Hour}
	default:
		return nil
	}
}

func (g *benchGen) consent() *client.Consent {
	if g.rng.IntN(2) == 0 {
		return nil
	}
	return &client.Consent{Separate: g.rng.IntN(2) == 0, Reference: fmt.Sprintf("consent-%06d", g.rng.IntN(1_000_000))}
}

func (g *benchGen) collect(p benchProcessor, s string) client.Event {
	e := client.Collect{Subject: s, Categories: g.cats(p), Purpose: g.pick(p.purposes), LegalBasis: p.basis, Consent: g.consent(),
		Retention: g.retention(), OccurredAt: g.when(), Processor: p.id, System: p.system, Attributes: g.attrs()}
	if p.place != "" {
		e.Place = &client.Place{Kind: p.place, NoticeSignRef: fmt.Sprintf("sign-%03d", g.rng.IntN(500))}
	}
	return e
}

func (g *benchGen) store(p benchProcessor, s string) client.Event {
	return client.Store{Subject: s, Categories: g.cats(p), Purpose: g.pick(p.purposes), Retention: g.retention(),
		OccurredAt: g.when(), Processor: p.id, System: p.system}
}

func (g *benchGen) use(p benchProcessor, s string) client.Event {
	return client.Use{Subject: s, Categories: g.cats(p), Purpose: g.pick(p.purposes), LegalBasis: p.basis,
		OccurredAt: g.when(), Processor: p.id, System: p.system, Attributes: g.attrs()}
}

func (g *benchGen) process(p benchProcessor, s string) client.Event {
	return client.Process{Subject: s, Categories: g.cats(p), Purpose: g.pick(p.purposes), LegalBasis: p.basis,
		OccurredAt: g.when(), Processor: p.id, System: p.system}
}

func (g *benchGen) transmit(p benchProcessor, s string) client.Event {
	return client.Transmit{Subject: s, Categories: g.cats(p), Purpose: g.pick(p.purposes),
		Recipient: &client.Recipient{Processor: p.id, System: "archive"}, OccurredAt: g.when(), Processor: p.id, System: p.system}
}

func (g *benchGen) provide(p benchProcessor, s string) client.Event {
	return client.Provide{Subject: s, Categories: g.cats(p), Purpose: g.pick(p.purposes), LegalBasis: p.basis, Consent: g.consent(),
		Recipient: client.Recipient{Processor: g.pick([]string{"partner-bank", "courier-co", "insurer-9"})}, OccurredAt: g.when(), Processor: p.id}
}

func (g *benchGen) entrust(p benchProcessor, s string) client.Event {
	return client.Entrust{Subject: s, Categories: g.cats(p), Purpose: g.pick(p.purposes), LegalBasis: p.basis,
		Recipient: client.Recipient{Processor: g.pick([]string{"cloud-host", "call-center"})}, OccurredAt: g.when(), Processor: p.id}
}

func (g *benchGen) disclose(p benchProcessor, s string) client.Event {
	return client.Disclose{Subject: s, Categories: []string{"name"}, Purpose: "news-reporting", LegalBasis: "news-public-interest",
		OccurredAt: g.when(), Processor: p.id}
}

func (g *benchGen) transferAbroad(p benchProcessor, s string) client.Event {
	return client.TransferAbroad{Subject: s, Categories: g.cats(p), Purpose: g.pick(p.purposes), LegalBasis: p.basis,
		Consent:    &client.Consent{Separate: true, Reference: fmt.Sprintf("consent-%06d", g.rng.IntN(1_000_000))},
		Recipient:  client.Recipient{Processor: "overseas-partner", Country: g.pick([]string{"HK", "SG", "DE", "US", "JP"})},
		OccurredAt: g.when(), Processor: p.id}
}

func (g *benchGen) destroy(p benchProcessor, s string) client.Event {
	return client.Destroy{Subject: s, Categories: g.cats(p), OccurredAt: g.when(), Processor: p.id, System: p.system}
}

func (g *benchGen) access(p benchProcessor, s string) client.Event {
	return client.Access{Subject: s, Categories: g.cats(p), Actor: fmt.Sprintf("staff-%04d", g.rng.IntN(2000)),
		Reason: fmt.Sprintf("case %d-%05d", 2026, g.rng.IntN(100_000)), Kind: client.AccessKind(1 + g.rng.IntN(3)),
		OccurredAt: g.when(), Processor: p.id, System: p.system}
}

func (g *benchGen) consentGranted(p benchProcessor, s string) client.Event {
	return client.ConsentGranted{Subject: s, Purpose: g.pick(p.purposes), Consent: g.consent(), OccurredAt: g.when(), Processor: p.id}
}

func (g *benchGen) consentWithdrawn(p benchProcessor, s string) client.Event {
	return client.ConsentWithdrawn{Subject: s, Purpose: g.pick(p.purposes), OccurredAt: g.when(), Processor: p.id}
}

func (g *benchGen) purposeEnded(p benchProcessor, s string) client.Event {
	return client.PurposeEnded{Subject: s, Purpose: g.pick(p.purposes), OccurredAt: g.when(), Processor: p.id}
}
