package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// TestOneConnReadsWholeReply: the generator reads every line of the reply,
// also when the server writes them apart, and only then closes: the server
// sees a clean EOF, not a reset. A server that closes early is a failure.
func TestOneConnReadsWholeReply(t *testing.T) {
	cs, err := newClients(1, benchNets, headerDst)
	if err != nil {
		t.Fatal(err)
	}
	c := &cs[0]
	for _, tc := range []struct {
		name    string
		lines   []string // written one by one, 20 ms apart
		want    int      // lines the generator expects
		wantErr bool
	}{
		{"two lines apart", []string{string(c.prefix) + "country=US\n", "Hello!\n"}, 2, false},
		{"one line", []string{string(c.prefix) + "country=US\n"}, 1, false},
		{"closed after one of two", []string{string(c.prefix) + "country=US\n"}, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			after := make(chan error, 1) // what the server read after its reply
			go func() {
				conn, err := ln.Accept()
				if err != nil {
					after <- err
					return
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(conn)
				if _, err := br.Discard(len(c.hello)); err != nil {
					after <- err
					return
				}
				for i, l := range tc.lines {
					time.Sleep(20 * time.Millisecond)
					if i > 0 { // the client must still be there, waiting for this line
						conn.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
						if _, err := br.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
							after <- fmt.Errorf("before line %d: the client closed or sent more: %v", i+1, err)
							return
						}
						conn.SetDeadline(time.Now().Add(10 * time.Second))
					}
					if _, err := io.WriteString(conn, l); err != nil {
						after <- err
						return
					}
				}
				if tc.wantErr {
					after <- nil
					return
				}
				n, err := br.Read(make([]byte, 1))
				if n != 0 || !errors.Is(err, io.EOF) {
					after <- errors.New("the client did not close cleanly: " + strings.TrimSpace(err.Error()))
					return
				}
				after <- nil
			}()
			buf := make([]byte, 2048)
			_, err = oneConn(ln.Addr().(*net.TCPAddr), c, buf, 5*time.Second, false, tc.want)
			if (err != nil) != tc.wantErr {
				t.Fatalf("oneConn: %v, want error: %v", err, tc.wantErr)
			}
			if err := <-after; err != nil {
				t.Errorf("server side: %v", err)
			}
		})
	}
}
