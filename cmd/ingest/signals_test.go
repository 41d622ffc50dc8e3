package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/originlens/originlens/internal/opensearchtest"
)

// selfSignedPEM is a CA certificate, for a --opensearch-ca-file that loads.
func selfSignedPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// procExited reports whether pid has exited (a zombie not yet waited for,
// or gone).
func procExited(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	_, rest, ok := strings.Cut(string(b), ") ")
	return !ok || strings.HasPrefix(rest, "Z") || strings.HasPrefix(rest, "X")
}

// Ensure ingest survives SIGHUP for its whole life: while it starts (held
// reading --opensearch-ca-file, a FIFO), while it consumes, and right after
// SIGTERM; it logs each and exits 0 on SIGTERM. The old ingest handled no
// SIGHUP at all and died of the first (status 129).
func TestSIGHUP(t *testing.T) {
	bin := ingestBinary(t)
	k := newKafka(t, 1)
	srv := opensearchtest.NewServer()
	defer srv.Close()
	fifo := filepath.Join(t.TempDir(), "ca.pem")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	logs := &syncBuffer{}
	cmd := exec.Command(bin, "--kafka-brokers", strings.Join(k.brokers, ","), "--opensearch-url", srv.URL, "--opensearch-ca-file", fifo,
		"--admin", "127.0.0.1:0", "--ui", "")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	alive := func(what string) {
		t.Helper()
		if procExited(cmd.Process.Pid) {
			t.Fatalf("%s: ingest exited\n%s", what, logs.String())
		}
	}
	// Once ingest has the FIFO open for reading, main's first line ran.
	var w *os.File
	for deadline := time.Now().Add(60 * time.Second); w == nil; time.Sleep(5 * time.Millisecond) {
		f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		switch {
		case err == nil:
			w = f
		case !errors.Is(err, syscall.ENXIO):
			t.Fatal(err)
		case time.Now().After(deadline):
			t.Fatalf("ingest never opened the CA file\n%s", logs.String())
		}
		alive("starting")
	}
	for range 3 {
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	// Time for a default-action SIGHUP to land before start-up goes on; a
	// pass needs no sleep (the checks below poll).
	time.Sleep(100 * time.Millisecond)
	if _, err := w.Write(selfSignedPEM(t)); err != nil {
		t.Fatalf("writing the CA file: %v (exited: %v)\n%s", err, procExited(cmd.Process.Pid), logs.String())
	}
	w.Close()
	waitFor(t, "consuming", 60*time.Second, func() bool { alive("start-up"); return strings.Contains(logs.String(), "msg=consuming") })
	waitFor(t, "the start-up SIGHUP logged", 60*time.Second, func() bool {
		return strings.Count(logs.String(), "SIGHUP: ingest has nothing to reload") == 1
	})
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second SIGHUP logged", 60*time.Second, func() bool {
		alive("consuming")
		return strings.Count(logs.String(), "SIGHUP: ingest has nothing to reload") == 2
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP) // may find it exited: that is fine
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit %v (%v); want 0\n%s", err, cmd.ProcessState, logs.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("no exit within 60 s of SIGTERM\n%s", logs.String())
	}
}
