package ledger

import (
	"context"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// RecordErasureOnly does the first step of Erase alone, as a crash right
// after it would leave things: the erasure entry is in the log, the keys
// are not destroyed.
func RecordErasureOnly(ctx context.Context, l *Ledger, pseudonym string) (*piledgerv1.Receipt, uint32, error) {
	gen, err := l.keys.LatestGeneration(ctx, pseudonym)
	if err != nil {
		return nil, 0, err
	}
	s, err := sealErasure(ctx, l.keys, pseudonym, &piledgerv1.Erasure{Generation: gen, RequestedBy: "admin"}, l.cfg.Now())
	if err != nil {
		return nil, 0, err
	}
	rec, err := l.appendSealed(ctx, s)
	return rec, gen, err
}
