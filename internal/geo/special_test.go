package geo_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/originlens/originlens/internal/geo"
)

// TestReloadRefusesSpecialFiles puts in place of the database what is not
// a database file an operator (or a broken script) can leave there: a
// FIFO (opening one for reading blocked the reloader forever, and with it
// the shutdown), a sparse file of terabytes (reading it whole allocated
// its size: the runtime died "out of memory"), a directory, a symlink to
// /dev/zero. Each must be refused within a bounded time, with the database
// in use kept; a symlink swapped to a good file is adopted.
func TestReloadRefusesSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	path := writeCity(t, dir, cityEntries, built)
	reg := prometheus.NewRegistry()
	db := open(t, geo.Config{CityPath: path, Registerer: reg})
	kp := netip.MustParseAddr("198.51.100.1")

	reload := func(name string) error {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- db.Reload() }()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: Reload still blocked after 30 s", name)
			return nil
		}
	}
	check := func(name string, wantErr bool) {
		t.Helper()
		err := reload(name)
		if wantErr && err == nil {
			t.Errorf("%s: Reload succeeded, want it refused", name)
		}
		if !wantErr && err != nil {
			t.Errorf("%s: Reload = %v, want nil", name, err)
		}
		if got := db.Lookup(kp).CountryISO; got != "KP" {
			t.Errorf("%s: Lookup(%v).CountryISO = %q, want KP (a complete database in use)", name, kp, got)
		}
	}
	swap := func(make func(tmp string) error) {
		t.Helper()
		tmp := path + ".tmp"
		os.RemoveAll(tmp)
		if err := make(tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(path); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	good := filepath.Join(dir, "good.mmdb")
	if err := os.WriteFile(good, cityBytes(t, cityEntries, built.Add(time.Hour)), 0o644); err != nil {
		t.Fatal(err)
	}

	swap(func(tmp string) error {
		f, err := os.Create(tmp)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Truncate(8 << 40) // 8 TiB, sparse
	})
	check("sparse 8 TiB file", true)
	swap(func(tmp string) error {
		f, err := os.Create(tmp)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Truncate(geo.MaxFileSize + 1)
	})
	check("sparse file one byte over MaxFileSize", true)
	swap(func(tmp string) error { return syscall.Mkfifo(tmp, 0o644) })
	check("FIFO", true)
	swap(func(tmp string) error { return os.Mkdir(tmp, 0o755) })
	check("directory", true)
	swap(func(tmp string) error { return os.Symlink("/dev/zero", tmp) })
	check("symlink to /dev/zero", true)
	swap(func(tmp string) error { return os.Symlink(good, tmp) })
	check("symlink to a good file", false)
	if got := metric(t, reg, "originlens_geo_reloads_total", "city"); got != 1 {
		t.Errorf("reloads = %v, want 1 (the symlinked good file)", got)
	}
	if got := metric(t, reg, "originlens_geo_reload_errors_total", "city"); got != 5 {
		t.Errorf("reload errors = %v, want 5", got)
	}

	// At start a FIFO or an oversized file is an error, not a hang.
	swap(func(tmp string) error { return syscall.Mkfifo(tmp, 0o644) })
	done := make(chan error, 1)
	go func() {
		d, err := geo.Open(geo.Config{CityPath: path})
		if err == nil {
			d.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Open of a FIFO succeeded, want error")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Open of a FIFO still blocked after 30 s")
	}
}
