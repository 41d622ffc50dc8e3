package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// which Linux fixes at 100 on every architecture Go supports.
const clockTick = 10 * time.Millisecond

// procStat is what the benchmark reads of /proc/PID/stat.
type procStat struct {
	PPID int
	CPU  time.Duration // utime + stime, all threads
}

// parseStat parses the content of /proc/PID/stat. The command name (field 2)
// is in parentheses and may itself hold spaces and parentheses, so fields
// are counted from the last ')'.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("parsing stat: no command name")
	}
	// After ") ": state(3) ppid(4) ... utime(14) stime(15).
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("parsing stat: %d fields after the command name, want at least 13", len(f))
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, fmt.Errorf("parsing stat ppid: %w", err)
	}
	ut, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("parsing stat utime: %w", err)
	}
	st, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("parsing stat stime: %w", err)
	}
	return procStat{PPID: ppid, CPU: time.Duration(ut+st) * clockTick}, nil
}

// readStat reads /proc/PID/stat.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, fmt.Errorf("reading stat of %d: %w", pid, err)
	}
	return parseStat(b)
}

// procMem is what the benchmark reads of /proc/PID/status, in bytes.
type procMem struct {
	RSS  int64 // VmRSS: resident now
	Peak int64 // VmHWM: peak resident since the process started
}

// parseStatus parses the VmRSS and VmHWM lines of /proc/PID/status.
func parseStatus(b []byte) (procMem, error) {
	var m procMem
	var seen int
	for line := range strings.SplitSeq(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return procMem{}, fmt.Errorf("parsing status: bad %s line %q", key, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return procMem{}, fmt.Errorf("parsing status %s: %w", key, err)
		}
		if key == "VmRSS" {
			m.RSS = kb << 10
		} else {
			m.Peak = kb << 10
		}
		seen++
	}
	if seen != 2 {
		return procMem{}, errors.New("parsing status: VmRSS or VmHWM missing")
	}
	return m, nil
}

// readMem reads /proc/PID/status.
func readMem(pid int) (procMem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procMem{}, fmt.Errorf("reading status of %d: %w", pid, err)
	}
	return parseStatus(b)
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) ([]int, error) {
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return nil, err
	}
	var kids []int
	for _, d := range dirs {
		p, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		st, err := readStat(p)
		if err != nil {
			continue // gone meanwhile
		}
		if st.PPID == pid {
			kids = append(kids, p)
		}
	}
	return kids, nil
}
