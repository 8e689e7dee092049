package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/piledger/piledger/api/client"
)

// In these examples serverAddr is the gRPC address of a running piledger
// (`piledger serve` listens on 127.0.0.1:7070 by default). The test suite
// starts a real server for them, and checks their output.

// A backend records that it collected a face at its door, and waits until
// the event is durably in the log.
func Example() {
	c, err := client.New(serverAddr, client.WithInsecure(), client.WithProcessor("acme-gates"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx := context.Background()
	p := c.Emit(ctx, client.Collect{
		Subject:    "C-104211",
		Categories: []string{"face"},
		Purpose:    "access-control",
		Place:      &client.Place{Kind: "office", NoticeSignRef: "lobby-sign-2"},
		Retention:  &client.Retention{KeepFor: 30 * 24 * time.Hour},
	})
	r, err := p.Get(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("recorded:", r.EventID == p.EventID(), "duplicate:", r.Duplicate)
	// Output: recorded: true duplicate: false
}

func ExampleNew() {
	apiKey := "pk_example" // in production: read it from a file or the environment
	c, err := client.New(serverAddr,
		client.WithInsecure(), // same machine only; across a network use WithTLSFiles or WithTLSConfig
		client.WithAPIKey(apiKey),
		client.WithProcessor("city-police"),
		client.WithBatching(200, 1<<20, 5*time.Millisecond),
		client.WithMaxInFlight(50_000),
		client.WithRetry(client.RetryPolicy{
			InitialBackoff: 50 * time.Millisecond,
			MaxBackoff:     2 * time.Second,
			Multiplier:     2,
			MaxElapsed:     5 * time.Minute,
		}),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println("ready")

	_, err = client.New(serverAddr, client.WithBatching(5000, 1<<20, 0))
	fmt.Println(errors.Is(err, client.ErrInvalidOption))
	// Output:
	// ready
	// true
}

// Many goroutines (here one loop) emit; the client batches their events into
// few calls. Flush sends what is waiting and waits for it.
func ExampleClient_Emit() {
	c, err := client.New(serverAddr, client.WithInsecure(), client.WithProcessor("metro-transit"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx := context.Background()
	var pending []*client.Pending
	for i := range 1000 {
		pending = append(pending, c.Emit(ctx, client.Use{
			Subject:    fmt.Sprintf("card-%04d", i%50),
			Categories: []string{"trajectory"},
			Purpose:    "service-provision",
			System:     "fare-gates",
		}))
	}
	if err := c.Flush(ctx); err != nil {
		log.Fatal(err)
	}
	recorded := 0
	for _, p := range pending {
		if _, err := p.Get(ctx); err == nil {
			recorded++
		}
	}
	fmt.Println(recorded, "events recorded")
	// Output: 1000 events recorded
}

// Append records a batch atomically: both events or neither. The events of
// one batch take consecutive places in the log.
func ExampleClient_Append() {
	c, err := client.New(serverAddr, client.WithInsecure(), client.WithProcessor("shop-42"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	receipts, err := c.Append(context.Background(),
		client.Collect{Subject: "C-77", Categories: []string{"name", "phone"}, Purpose: "contract-performance", LegalBasis: "contract-or-hr"},
		client.TransferAbroad{
			Subject:    "C-77",
			Categories: []string{"name"},
			Purpose:    "contract-performance",
			LegalBasis: "contract-or-hr",
			Consent:    &client.Consent{Separate: true, Reference: "consent-77"},
			Recipient:  client.Recipient{Processor: "logistics-hk", Country: "HK"},
		},
	)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(receipts), "receipts, consecutive:", receipts[1].Index == receipts[0].Index+1)
	// Output: 2 receipts, consecutive: true
}

// A rejected event comes back as a typed error naming each field at fault;
// no message needs parsing.
func ExampleFieldViolations() {
	c, err := client.New(serverAddr, client.WithInsecure(), client.WithProcessor("shop-42"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx := context.Background()
	_, err = c.Emit(ctx, client.TransferAbroad{
		Subject:    "C-78",
		Categories: []string{"name"},
		Purpose:    "contract-performance",
		Recipient:  client.Recipient{Processor: "logistics-hk"}, // no country
	}).Get(ctx)
	if errors.Is(err, client.ErrInvalidEvent) {
		for _, v := range client.FieldViolations(err) {
			fmt.Printf("%s: %s\n", v.Field, v.Description)
		}
	}
	// Output: recipient.country: is required for OPERATION_TRANSFER_ABROAD
}

// A clinic's backend lists its holdings due for destruction, to destroy the
// data and record it. With its API key the server shows it its own
// processor's holdings only, and refuses another's with a typed error.
func ExampleClient_DueHoldings() {
	// readsAddr is a piledger serving read models with authentication on,
	// clinicKey the API key of processor city-clinic there.
	c, err := client.New(readsAddr, client.WithInsecure(), client.WithAPIKey(clinicKey), client.WithProcessor("city-clinic"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx := context.Background()
	receipts, err := c.Append(ctx, client.Collect{
		EventID:    "0195508a-6c00-7000-8000-000000000001", // fixed: appending it again records nothing new
		Subject:    "patient-1001",
		OccurredAt: time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC),
		Categories: []string{"phone"},
		Purpose:    "contract-performance",
		LegalBasis: "contract-or-hr",
		Retention:  &client.Retention{KeepFor: 30 * 24 * time.Hour},
	})
	if err != nil {
		log.Fatal(err)
	}
	for h, err := range c.DueHoldings(ctx, client.DueQuery{MinIndex: &receipts[0].Index}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(h.GetProcessor(), h.GetDataCategory(), h.GetDestroyDueTime().AsTime().Format(time.DateOnly), h.GetState())
	}

	_, err = c.ListDueHoldings(ctx, client.DueQuery{Processor: "shop-42"}, "")
	fmt.Println(errors.Is(err, client.ErrPermissionDenied))
	// Output:
	// city-clinic phone 2025-03-31 HOLDING_STATE_OVERDUE
	// true
}
