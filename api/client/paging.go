package client

import (
	"context"
	"iter"
	"math"

	"google.golang.org/grpc"
)

// pageReply is one page of a paged list: it names the next page, or ""
// after the last.
type pageReply interface {
	GetNextPageToken() string
}

// pages iterates over the items of a paged list. It calls list with the
// empty page token, then with each page's NextPageToken until one is empty,
// and yields items(page) of every page in order. A failure of list ends the
// iteration with a zero item and list's error; breaking out of the loop
// stops calling list.
func pages[Page pageReply, Item any](list func(pageToken string) (Page, error), items func(Page) []Item) iter.Seq2[Item, error] {
	return func(yield func(Item, error) bool) {
		token := ""
		for {
			page, err := list(token)
			if err != nil {
				var zero Item
				yield(zero, err)
				return
			}
			for _, item := range items(page) {
				if !yield(item, nil) {
					return
				}
			}
			if token = page.GetNextPageToken(); token == "" {
				return
			}
		}
	}
}

// listPage reads one page: it calls rpc with req under c's retry policy, as
// [retryRead] does (op names the call in errors), and returns the page or
// retryRead's error.
func listPage[Req, Page any](ctx context.Context, c *Client, op string, rpc func(context.Context, Req, ...grpc.CallOption) (Page, error), req Req) (Page, error) {
	return retryRead(ctx, c, op, func(ctx context.Context) (Page, error) {
		return rpc(ctx, req)
	})
}

// pageSize is a query's PageSize as a request's page_size: n clamped to the
// int32 range, so that a negative size stays negative (the server refuses
// it) and a huge one stays above the server's maximum.
func pageSize(n int) int32 {
	return int32(min(max(n, math.MinInt32), math.MaxInt32))
}
