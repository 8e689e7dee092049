package projections_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/piledger/piledger/projections"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

func TestTimelinePagesNewestFirst(t *testing.T) {
	s := startStack(t, filepath.Join(t.TempDir(), "node"))
	ctx := context.Background()
	a, b := "resident-a", "resident-b"
	// Appended out of order: the timeline sorts by occurredAt.
	s.append(cameraFace(a, "city-police", 3), policeAccess(a, "city-police", 4))
	s.append(cameraFace(a, "city-police", 1), provide(a, "city-police", "district-office", 5), destroy(a, "city-police", 40, "face"))
	s.append(cameraFace(b, "city-police", 2))
	s.sync()

	var got []*piledgerv1.SubjectEvent
	token := ""
	pages := 0
	for {
		resp, err := s.store.SubjectEvents(ctx, s.pseudonym(a), 2, token, nil)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		got = append(got, resp.GetSubjectEvents()...)
		if resp.GetLogSize() != 6 {
			t.Errorf("log size %d, want 6", resp.GetLogSize())
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
		if strings.Contains(token, s.pseudonym(a)) {
			t.Error("page token holds the pseudonym in clear")
		}
	}
	if pages != 3 {
		t.Errorf("%d pages of 2 for 5 events, want 3 (no empty last page)", pages)
	}
	var order []float64
	for _, e := range got {
		order = append(order, float64(e.GetEvent().GetOccurredAt().AsTime().Sub(day0))/float64(24*time.Hour))
		if e.GetEvent().GetSubjectRef() != "" {
			t.Errorf("event %s carries the raw subject reference", e.GetName())
		}
		if !strings.HasPrefix(e.GetName(), "subjects/"+s.pseudonym(a)+"/events/") || e.GetRecordTime() == nil {
			t.Errorf("event name %q or record time missing", e.GetName())
		}
	}
	if want := []float64{40, 5, 4, 3, 1}; !slices.Equal(order, want) {
		t.Errorf("timeline days %v, want %v (newest first)", order, want)
	}
	access := got[2].GetEvent()
	if access.GetOperation() != piledgerv1.Operation_OPERATION_ACCESS || access.GetAccess().GetActor() != "officer-88" || access.GetAccess().GetReason() == "" {
		t.Errorf("the police access is not in the timeline with who and why: %v", access)
	}

	// A token is bound to its subject, and cannot be altered.
	first, err := s.store.SubjectEvents(ctx, s.pseudonym(a), 1, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.SubjectEvents(ctx, s.pseudonym(b), 1, first.GetNextPageToken(), nil); !errors.Is(err, projections.ErrInvalidPageToken) {
		t.Errorf("token of another subject: %v, want ErrInvalidPageToken", err)
	}
	tampered := []byte(first.GetNextPageToken())
	tampered[len(tampered)/2] ^= 1
	if _, err := s.store.SubjectEvents(ctx, s.pseudonym(a), 1, string(tampered), nil); !errors.Is(err, projections.ErrInvalidPageToken) {
		t.Errorf("tampered token: %v, want ErrInvalidPageToken", err)
	}
	if _, err := s.store.SubjectEvents(ctx, s.pseudonym("nobody"), 1, "", nil); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("unknown subject: %v, want ErrNotFound", err)
	}
	// Page size is coerced, not rejected.
	if resp, err := s.store.SubjectEvents(ctx, s.pseudonym(a), 5000, "", nil); err != nil || len(resp.GetSubjectEvents()) != 5 {
		t.Errorf("page size 5000: %v, %v", resp, err)
	}
}

func TestExport(t *testing.T) {
	s := startStack(t, filepath.Join(t.TempDir(), "node"))
	r := "resident-x"
	s.append(consent(r, "shop-42", piledgerv1.Operation_OPERATION_CONSENT_GRANTED, 0), marketingCollect(r, "shop-42", 1))
	// The withdrawal is reported before a later grant that occurred after it.
	s.append(consent(r, "shop-42", piledgerv1.Operation_OPERATION_CONSENT_GRANTED, 30),
		consent(r, "shop-42", piledgerv1.Operation_OPERATION_CONSENT_WITHDRAWN, 20), cameraFace(r, "city-police", 2))
	c := consent(r, "bank-7", piledgerv1.Operation_OPERATION_CONSENT_WITHDRAWN, 5)
	s.append(c)
	s.sync()
	s.clock.set(day(60))
	out, err := s.store.Export(context.Background(), s.pseudonym(r), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.GetEvents()) != 6 || len(out.GetDataMap().GetHoldings()) != 2 || out.GetName() != "subjects/"+s.pseudonym(r) {
		t.Fatalf("export: %d events, %d holdings, name %q", len(out.GetEvents()), len(out.GetDataMap().GetHoldings()), out.GetName())
	}
	var states []string
	for _, cs := range out.GetConsents() {
		states = append(states, cs.GetProcessor()+"/"+cs.GetPurpose()+"="+cs.GetState().String())
	}
	want := []string{"bank-7/marketing=CONSENT_STATE_WITHDRAWN", "shop-42/marketing=CONSENT_STATE_GRANTED"}
	if !slices.Equal(states, want) {
		t.Errorf("consents %v, want %v (the latest statement by occurrence wins)", states, want)
	}
	// One JSON document, without the raw reference.
	b, err := protojson.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), r) {
		t.Error("the export holds the raw subject reference")
	}
}

func TestDueHoldings(t *testing.T) {
	s := startStack(t, filepath.Join(t.TempDir(), "node"))
	ctx := context.Background()
	// Ten residents under one camera; one resident's footage is destroyed.
	for i := range 10 {
		s.append(cameraFace(ref("resident", i), "city-police", float64(i)))
	}
	s.append(destroy(ref("resident", 3), "city-police", 40, "face"))
	// Epidemic data for 25 residents, kept until the purpose ends.
	for i := range 25 {
		s.append(epidemicCollect(ref("resident", i), "health-commission", 1))
	}
	s.sync()
	s.clock.set(day(95))

	list := func(q projections.DueQuery) []*piledgerv1.Holding {
		t.Helper()
		var out []*piledgerv1.Holding
		for {
			resp, err := s.store.DueHoldings(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, resp.GetHoldings()...)
			if q.PageToken = resp.GetNextPageToken(); q.PageToken == "" {
				return out
			}
			if len(resp.GetHoldings()) != q.PageSize {
				t.Errorf("a page before the last holds %d holdings, want %d", len(resp.GetHoldings()), q.PageSize)
			}
		}
	}
	// Now (day 95): camera footage of days 0-5 passed its 90-day deadline,
	// except resident 3's, destroyed.
	now := list(projections.DueQuery{PageSize: 2})
	if got := countBy(now, "city-police"); got != 5 {
		t.Errorf("due now at city-police: %d, want 5: %v", got, now)
	}
	if countBy(now, "health-commission") != 0 {
		t.Error("epidemic data listed before the epidemic ended")
	}
	for i := 1; i < len(now); i++ {
		if now[i].GetDestroyDueTime().AsTime().Before(now[i-1].GetDestroyDueTime().AsTime()) {
			t.Error("fixed deadlines of one processor not in deadline order")
		}
	}
	// Looking ahead: by day 97 two more are due (HELD today).
	ahead := list(projections.DueQuery{Before: day(97), PageSize: 3})
	if len(ahead) != 7 || ahead[6].GetState() != held {
		t.Errorf("due by day 97: %d holdings, last %s; want 7, the last still held", len(ahead), ahead[len(ahead)-1].GetState())
	}

	// The epidemic ends (one subjectless event): all 50 epidemic holdings
	// are due at once, with no write per subject.
	s.append(purposeEnded("", "health-commission", "epidemic-prevention", 90))
	s.sync()
	all := list(projections.DueQuery{PageSize: 7})
	if countBy(all, "health-commission") != 50 || countBy(all, "city-police") != 5 {
		t.Errorf("after the epidemic ended: %d health, %d police holdings due; want 50 and 5", countBy(all, "health-commission"), countBy(all, "city-police"))
	}
	seen := map[string]bool{}
	for _, h := range all {
		if seen[h.GetName()] {
			t.Errorf("holding %s listed twice", h.GetName())
		}
		seen[h.GetName()] = true
		if h.GetProcessor() == "health-commission" && (h.GetState() != due || h.GetDeadlineBasis() != ended) {
			t.Errorf("epidemic holding %s: %s by %s, want DUE by the purpose end", h.GetName(), h.GetState(), h.GetDeadlineBasis())
		}
	}
	// Grouped by processor: one run per processor.
	runs := 1
	for i := 1; i < len(all); i++ {
		if all[i].GetProcessor() != all[i-1].GetProcessor() {
			runs++
		}
	}
	if runs != 2 {
		t.Errorf("holdings of 2 processors come in %d runs, want 2", runs)
	}
	// One processor only, and its token is bound to that filter.
	police := list(projections.DueQuery{Processor: "city-police", PageSize: 2})
	if len(police) != 5 || countBy(police, "city-police") != 5 {
		t.Errorf("city-police only: %d holdings", len(police))
	}
	first, err := s.store.DueHoldings(ctx, projections.DueQuery{Processor: "city-police", PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.DueHoldings(ctx, projections.DueQuery{Processor: "health-commission", PageToken: first.GetNextPageToken()}); !errors.Is(err, projections.ErrInvalidPageToken) {
		t.Errorf("token used with another processor: %v, want ErrInvalidPageToken", err)
	}
	// Pages keep the first page's evaluation time.
	s.clock.set(day(300))
	second, err := s.store.DueHoldings(ctx, projections.DueQuery{Processor: "city-police", PageSize: 2, PageToken: first.GetNextPageToken()})
	if err != nil {
		t.Fatal(err)
	}
	if !second.GetEvaluateTime().AsTime().Equal(day(95)) || !second.GetBefore().AsTime().Equal(day(95)) {
		t.Errorf("second page evaluated at %v before %v, want the first page's day 95", second.GetEvaluateTime().AsTime(), second.GetBefore().AsTime())
	}
}

func countBy(hs []*piledgerv1.Holding, processor string) int {
	n := 0
	for _, h := range hs {
		if h.GetProcessor() == processor {
			n++
		}
	}
	return n
}

func TestPurposeHoldings(t *testing.T) {
	s := startStack(t, filepath.Join(t.TempDir(), "node"))
	ctx := context.Background()
	for i := range 6 {
		s.append(epidemicCollect(ref("resident", i), "health-commission", float64(2+i)))
	}
	s.append(epidemicCollect(ref("resident", 0), "community-7", 3))
	s.append(destroy(ref("resident", 0), "health-commission", 50, "travel-history"))
	s.append(destroy(ref("resident", 1), "health-commission", 50, "health-code-status", "travel-history"))
	s.append(purposeEnded("", "health-commission", "epidemic-prevention", 45))
	s.append(cameraFace(ref("resident", 0), "city-police", 1))
	s.sync()

	var got []*piledgerv1.PurposeHolding
	token := ""
	for {
		resp, err := s.store.PurposeHoldings(ctx, "epidemic-prevention", 1, token, nil)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, resp.GetPurposeHoldings()...)
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(got) != 2 {
		t.Fatalf("%d holders, want 2: %v", len(got), got)
	}
	c, h := got[0], got[1]
	if c.GetProcessor() != "community-7" || c.GetHoldingCount() != 2 || c.GetPurposeEndTime() != nil || !c.GetEarliestObtainTime().AsTime().Equal(day(3)) {
		t.Errorf("community-7: %v", c)
	}
	// 12 holdings obtained, 3 destroyed; the oldest left is resident 0's
	// health-code status of day 2.
	if h.GetProcessor() != "health-commission" || h.GetSystem() != "health-code" || h.GetHoldingCount() != 9 ||
		!h.GetEarliestObtainTime().AsTime().Equal(day(2)) || !h.GetPurposeEndTime().AsTime().Equal(day(45)) {
		t.Errorf("health-commission: %v", h)
	}
	if len(h.GetCategories()) != 2 || h.GetCategories()[0].GetHoldingCount() != 5 || h.GetCategories()[1].GetHoldingCount() != 4 {
		t.Errorf("health-commission categories: %v", h.GetCategories())
	}
	if resp, err := s.store.PurposeHoldings(ctx, "marketing", 0, "", nil); err != nil || len(resp.GetPurposeHoldings()) != 0 {
		t.Errorf("a purpose nobody holds data for: %v, %v", resp, err)
	}
}

func TestReadYourWrites(t *testing.T) {
	s := startStack(t, filepath.Join(t.TempDir(), "node"))
	ctx := context.Background()
	for i := range 20 {
		r := s.append(cameraFace("resident-ryw", "city-police", float64(i)))
		idx := r[0].GetIndex()
		dm, err := s.store.DataMap(ctx, r[0].GetPseudonym(), &idx)
		if err != nil {
			t.Fatal(err)
		}
		if len(dm.GetHoldings()) != i+1 || dm.GetLogSize() <= idx {
			t.Fatalf("after append %d: %d holdings at log size %d", i, len(dm.GetHoldings()), dm.GetLogSize())
		}
	}
	// An index the log does not reach: ErrBehind after the wait limit.
	s.stopProjector()
	st := s.startProjector(projections.Config{Dir: filepath.Join(s.dir, "projections"), MaxConsistencyWait: 50 * time.Millisecond})
	far := uint64(1000)
	if _, err := st.DataMap(ctx, s.pseudonym("resident-ryw"), &far); !errors.Is(err, projections.ErrBehind) {
		t.Errorf("waiting for index 1000 of 20: %v, want ErrBehind", err)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (projections.Config{Dir: "x"}).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	for _, c := range []projections.Config{
		{},
		{Dir: "x", BatchEvents: -1},
		{Dir: "x", MaxConsistencyWait: -time.Second},
		{Dir: "x", CacheBytes: -1},
	} {
		if err := c.Validate(); !errors.Is(err, projections.ErrInvalidConfig) {
			t.Errorf("%+v: %v, want ErrInvalidConfig", c, err)
		}
	}
}
