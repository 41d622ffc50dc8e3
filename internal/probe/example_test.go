package probe_test

import (
	"context"
	"fmt"
	"net"

	"github.com/originlens/originlens/internal/probe"
	"github.com/originlens/originlens/internal/probe/listener"
	"github.com/originlens/originlens/internal/report"
)

// ExampleOnce runs the blog's netcat test once against nc-probe's own
// listener on loopback and judges the report.
func ExampleOnce() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- listener.New(listener.Config{}).Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()

	rep, tm, err := probe.Once(ctx, ln.Addr().String(), probe.Options{Echo: 2})
	if err != nil {
		panic(err)
	}
	saw, _ := probe.ClientAddr(rep)
	v := probe.Judge(saw.Addr(), tm.Local.Addr(), probe.ExpectLocal)
	fmt.Println(rep[report.KeyVia], rep[report.KeyDecision], len(tm.Echo), v)
	// Output: direct serve 2 preserved
}
