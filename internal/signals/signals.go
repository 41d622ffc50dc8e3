// Package signals owns a program's SIGINT, SIGTERM and SIGHUP for the whole
// life of the process. SIGHUP is registered when the package initializes,
// before main (~2 ms after exec, where main's first line runs ~10-15 ms
// after it in the app, after every package's initialization); Catch, on the
// first line of main, adds SIGINT and SIGTERM. None is ever unregistered,
// so from then on none can take its default action (terminate the
// process): not while flags are parsed and files load, not during the
// drain, not between the end of the drain and the exit. The first SIGINT
// or SIGTERM ends the Stopping context (the program drains); a second one
// exits at once with status 1. Each SIGHUP is a reload request that waits
// until the program takes it (Reload), so one sent before the program is
// ready to reload is kept, not lost, and one sent during the drain is
// simply not acted on by a program that no longer reloads.
package signals

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Handler turns the process's signals into a context and reload requests.
// Its methods are safe for concurrent use.
type Handler struct {
	prog     string
	stderr   io.Writer
	exit     func(code int)
	stopping context.Context
	stop     context.CancelFunc
	reload   chan struct{}
}

// early receives SIGHUP from this package's initialization on: before
// main, and before most of the program's other packages initialize (that
// takes ~10 ms, during which a SIGHUP would kill the process by its
// default action). SIGHUPs arriving before Catch wait in its buffer. Only
// SIGHUP: a SIGINT or SIGTERM before main should still end the process (a
// test binary that imports the package stays interruptible), and Catch
// takes them from main's first line. Importing the package is the
// registration; this is its only package-level state.
var early = func() chan os.Signal {
	c := make(chan os.Signal, 8)
	signal.Notify(c, syscall.SIGHUP)
	return c
}()

// Catch starts handling SIGINT, SIGTERM and SIGHUP for the rest of the
// process's life (SIGHUP from this package's initialization on; see
// early); prog names the program in the one line written to
// stderr before a second SIGINT or SIGTERM exits. Call it once, first
// thing in main. The goroutine it starts is owned by the process: it runs
// until the process exits.
func Catch(prog string) *Handler {
	c := early
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM) // added to SIGHUP
	h := newHandler(prog, os.Stderr, os.Exit)
	go h.loop(c)
	return h
}

func newHandler(prog string, stderr io.Writer, exit func(int)) *Handler {
	ctx, cancel := context.WithCancel(context.Background())
	return &Handler{prog: prog, stderr: stderr, exit: exit, stopping: ctx, stop: cancel, reload: make(chan struct{}, 1)}
}

// loop handles signals from c until c is closed (never, for Catch).
func (h *Handler) loop(c <-chan os.Signal) {
	for s := range c {
		h.handle(s)
	}
}

func (h *Handler) handle(s os.Signal) {
	switch s {
	case syscall.SIGHUP:
		select {
		case h.reload <- struct{}{}:
		default: // one is pending already: the reload will read the newest file
		}
	case syscall.SIGINT, syscall.SIGTERM:
		if h.stopping.Err() == nil {
			h.stop()
			return
		}
		fmt.Fprintf(h.stderr, "%s: second %s during the shutdown: exiting without finishing it\n", h.prog, signalName(s))
		h.exit(1)
	}
}

// Stopping is done at the first SIGINT or SIGTERM: the program should stop
// accepting work, drain and exit.
func (h *Handler) Stopping() context.Context { return h.stopping }

// Reload receives one value per SIGHUP not yet taken: SIGHUPs that arrive
// while one is pending are merged into it (a reload reads the newest
// file). Requests wait here until taken; none is ever dropped unseen.
func (h *Handler) Reload() <-chan struct{} { return h.reload }

// OnReload calls fn for each request from reload (a Handler's Reload)
// until ctx is done, with draining true once stopping is closed: a program
// logs and ignores those. fn runs on the caller's goroutine, one call at a
// time. OnReload blocks; a nil reload only waits for ctx.
func OnReload(ctx context.Context, reload, stopping <-chan struct{}, fn func(draining bool)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-reload:
		}
		select {
		case <-stopping:
			fn(true)
		default:
			fn(false)
		}
	}
}

func signalName(s os.Signal) string {
	switch s {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGHUP:
		return "SIGHUP"
	}
	return s.String()
}
