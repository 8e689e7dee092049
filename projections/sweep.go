package projections

import (
	"context"
	"log/slog"
	"maps"
	"time"
)

// sweepLoop evaluates the holding rules on the holdings past their
// deadline every Config.SweepInterval until ctx is done, and logs and keeps
// the counts (see ComputedFindings). Holdings past their deadline are
// findings of the question's time, not of the log alone: the sweep stores
// nothing, so a rebuild stays identical.
func (s *Store) sweepLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.logger.WarnContext(ctx, "findings sweep failed", slog.Any("error", err))
		}
	}
}

// Sweep evaluates the holding rules on every holding past its deadline now
// and returns the number of computed findings per rule; ComputedFindings
// returns the same until the next sweep. Safe for concurrent use.
func (s *Store) Sweep(ctx context.Context) (map[string]int, error) {
	now := s.cfg.Now()
	v, err := s.view(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer v.close()
	counts := map[string]int{}
	var after dueCursor
	skip := 0
	for {
		l := &findingLister{v: v, size: MaxPageSize, now: now}
		if err := l.computedFrom(after, skip); err != nil {
			return nil, err
		}
		for _, f := range l.out {
			counts[f.GetRule()]++
		}
		if l.next == nil {
			break
		}
		after, skip = l.next.due, l.next.skip
	}
	s.swept.Store(&counts)
	total := 0
	for _, n := range counts {
		total += n
	}
	s.logger.InfoContext(ctx, "findings sweep", slog.Time("evaluate_time", now),
		slog.Int("computed_findings", total), slog.Any("by_rule", counts))
	return maps.Clone(counts), nil
}

// ComputedFindings returns the counts of the last Sweep by rule; nil before
// the first.
func (s *Store) ComputedFindings() map[string]int {
	if c := s.swept.Load(); c != nil {
		return maps.Clone(*c)
	}
	return nil
}
