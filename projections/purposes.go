package projections

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// PurposeHoldings lists, per processor and system, the holdings obtained
// for a purpose that are not destroyed: how many, of which categories, and
// since which day. It reads counts only and never names a subject. Pages
// follow processor then system order; ErrInvalidPageToken for a token
// issued for another purpose. An unknown purpose gives an empty list.
func (s *Store) PurposeHoldings(ctx context.Context, purpose string, size int, pageToken string, minIndex *uint64) (*piledgerv1.ListPurposeHoldingsResponse, error) {
	bind := "purposes\x00" + purpose
	prefix := countPrefix(purpose)
	lower := prefix
	if pageToken != "" {
		cursor, err := s.openToken(ctx, bind, pageToken)
		if err != nil {
			return nil, err
		}
		// The cursor is the last group's key prefix "<holder>\0<system>\0".
		lower = prefixEnd(append(bytes.Clone(prefix), cursor...))
	}
	v, err := s.view(ctx, minIndex)
	if err != nil {
		return nil, err
	}
	defer v.close()
	size = pageSize(size)
	resp := &piledgerv1.ListPurposeHoldingsResponse{LogSize: v.pos.Size}
	it, err := v.iter(lower, prefixEnd(prefix))
	if err != nil {
		return nil, err
	}
	defer it.Close()

	var (
		group    []byte // "<holder>\0<system>\0" of the group being summed
		cur      *piledgerv1.PurposeHolding
		byCat    map[string]int64
		earliest uint32
		more     bool
	)
	finish := func() error {
		if cur == nil {
			return nil
		}
		for _, c := range slices.Sorted(maps.Keys(byCat)) {
			cur.Categories = append(cur.Categories, &piledgerv1.CategoryCount{DataCategory: c, HoldingCount: byCat[c]})
		}
		cur.EarliestObtainTime = timestamppb.New(time.Unix(int64(earliest)*86400, 0).UTC())
		end, err := v.purposeEnded(cur.GetProcessor(), purpose)
		if err != nil {
			return err
		}
		if !end.at.IsZero() {
			cur.PurposeEndTime = timestamppb.New(end.at)
		}
		resp.PurposeHoldings = append(resp.PurposeHoldings, cur)
		return nil
	}
	for it.First(); it.Valid(); it.Next() {
		holder, system, category, day, ok := parseCountKey(it.Key()[len(prefix):])
		val, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("projections: %w", err)
		}
		if !ok || len(val) != 8 {
			return nil, fmt.Errorf("%w: holding count row", ErrCorrupt)
		}
		g := append(append(append(append([]byte{}, holder...), 0), system...), 0)
		if !bytes.Equal(g, group) {
			if err := finish(); err != nil {
				return nil, err
			}
			if len(resp.PurposeHoldings) == size {
				more = true
				break
			}
			group, cur, byCat, earliest = g, &piledgerv1.PurposeHolding{Processor: holder, System: system}, map[string]int64{}, day
		}
		n := int64(binary.BigEndian.Uint64(val))
		cur.HoldingCount += n
		byCat[category] += n
		earliest = min(earliest, day)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("projections: %w", err)
	}
	if !more {
		if err := finish(); err != nil {
			return nil, err
		}
	}
	if more {
		last := resp.PurposeHoldings[len(resp.PurposeHoldings)-1]
		cursor := append(append(append(append([]byte{}, last.GetProcessor()...), 0), last.GetSystem()...), 0)
		if resp.NextPageToken, err = s.sealToken(ctx, bind, cursor); err != nil {
			return nil, err
		}
	}
	return resp, nil
}
