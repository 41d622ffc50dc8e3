package spool

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxHeldSegments bounds the segment files the spool keeps open (see the
// package doc); a var so that tests can lower it.
var maxHeldSegments = 256

// ErrDirReplaced: the spool directory's path now names a symbolic link or
// a file; the spool does not create segments through it.
var ErrDirReplaced = errors.New("spool: directory replaced")

// dirHandle is a directory the spool creates and deletes segments in: the
// configured one, or the one made (or found) at its path after it was
// removed. Segments are created and deleted relative to its descriptor, so
// they stay in the directory the spool checked, whatever happens to the
// path.
type dirHandle struct {
	f    *os.File // the directory
	fd   int      // f's descriptor, valid until f is closed
	lock *os.File // its LOCK file, flocked
	info os.FileInfo
	segs int // segments in it the spool still holds
}

// openDir opens the directory at path (following a symbolic link only
// when follow is set) and takes its lock.
func openDir(path string, follow bool) (*dirHandle, error) {
	flags := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC
	if !follow {
		flags |= unix.O_NOFOLLOW
	}
	fd, err := unix.Open(path, flags, 0)
	if err != nil {
		return nil, fmt.Errorf("opening spool directory: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	d := &dirHandle{f: os.NewFile(uintptr(fd), path), fd: fd}
	if d.info, err = d.f.Stat(); err != nil {
		d.f.Close()
		return nil, fmt.Errorf("opening spool directory: %w", err)
	}
	lfd, err := unix.Openat(fd, "LOCK", unix.O_CREAT|unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o640)
	if err != nil {
		d.f.Close()
		return nil, fmt.Errorf("opening spool lock: %w", &os.PathError{Op: "open", Path: path + "/LOCK", Err: err})
	}
	if err := unix.Flock(lfd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(lfd)
		d.f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, path)
		}
		return nil, fmt.Errorf("locking spool directory: %w", err)
	}
	d.lock = os.NewFile(uintptr(lfd), path+"/LOCK")
	return d, nil
}

// close closes the directory and releases its lock.
func (d *dirHandle) close() {
	d.lock.Close()
	d.f.Close()
}

// createSegmentFile creates name in d for reading and appending.
func (d *dirHandle) createSegmentFile(name, path string) (*os.File, error) {
	fd, err := unix.Openat(d.fd, name, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_APPEND|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o640)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// errNotRegular: what has a segment's name is not a regular file (a FIFO,
// a directory, a device put in its place); to the spool the segment is
// gone.
var errNotRegular = fmt.Errorf("not a regular file: %w", os.ErrNotExist)

// openSegmentFile opens name in d for reading. It never blocks on a FIFO
// put in a segment's place (O_NONBLOCK, then anything but a regular file
// is refused with an error that is os.ErrNotExist).
func (d *dirHandle) openSegmentFile(name, path string) (*os.File, error) {
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err = unix.Fstat(fd, &st); err == nil && st.Mode&unix.S_IFMT != unix.S_IFREG {
		err = errNotRegular
	}
	if err == nil {
		err = unix.SetNonblock(fd, false)
	}
	if err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// remove deletes name from d; a file already gone is not an error.
func (d *dirHandle) remove(name, path string) error {
	err := unix.Unlinkat(d.fd, name, 0)
	if err == nil || errors.Is(err, syscall.ENOENT) {
		return nil
	}
	return &os.PathError{Op: "unlink", Path: path, Err: err}
}

// removeSegment deletes seg's file from its directory, unless the name now
// names another file than the one the spool holds (replaced behind its
// back: that file is someone else's, left for the next Open to find).
func (s *Spool) removeSegment(seg *Segment) error {
	if seg.f != nil {
		var st unix.Stat_t
		err := unix.Fstatat(seg.dir.fd, seg.name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if fi, ferr := seg.f.Stat(); err == nil && ferr == nil {
			if own, ok := fi.Sys().(*syscall.Stat_t); ok && (own.Dev != st.Dev || own.Ino != st.Ino) {
				s.log.Warn("spool: a segment file was replaced by another file; left in place, the next start reads it",
					"segment", seg.Path)
				return nil
			}
		}
	}
	return seg.dir.remove(seg.name, seg.Path)
}

// dupFile returns a second descriptor of f's open file, for a reader whose
// life is its own: closing either leaves the other usable.
func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("duplicating the segment's descriptor: %w", derr)
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}

// checkDirLocked makes sure new segments can go to a directory at the
// configured path that the spool holds: when the path no longer names the
// directory the spool opened, because it was removed (rm -rf) or replaced
// by another directory, the spool makes a new one (with the first one's
// permissions) or takes the replacement, locks it, and says so once (WARN).
// A path that is now a symbolic link or not a directory is refused
// (ErrDirReplaced): the spool does not follow a link someone put in its
// place. A failure is logged once (ERROR) until a later call succeeds, and
// returned: the caller's events are refused and counted by it. It costs
// one stat(2) per segment created.
func (s *Spool) checkDirLocked() error {
	if st, err := os.Stat(s.cfg.Dir); err == nil && os.SameFile(st, s.dir.info) {
		s.dirErr = nil
		return nil
	}
	// The directory may vanish again between the steps (removed in a
	// loop): a few attempts, then the caller's events are refused.
	var err error
	for range dirAttempts {
		var what string
		if what, err = s.reviveDirLocked(); err == nil {
			s.dirErr = nil
			s.dirDirty = true
			s.log.Warn("spool: the spool directory was "+what+"; the events in the segments already written are kept (the spool holds their files open)",
				"dir", s.cfg.Dir, "mode", s.dirMode, "held_segments", len(s.sealed))
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	return s.dirFailed(err)
}

// dirAttempts bounds the attempts to find or make the spool directory,
// and to create a segment in it, when it keeps vanishing.
const dirAttempts = 5

// reviveDirLocked makes or takes the directory at the configured path
// (see [Spool.checkDirLocked]) and says what happened to the old one.
func (s *Spool) reviveDirLocked() (what string, err error) {
	what = "replaced by another directory; new segments go to the new one"
	created := false
	lst, err := os.Lstat(s.cfg.Dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		what, created = "removed; recreated it for new segments", true
		// Parents as Open makes them.
		err := os.MkdirAll(filepath.Dir(s.cfg.Dir), 0o750)
		if err == nil {
			err = os.Mkdir(s.cfg.Dir, s.dirMode)
		}
		if err != nil && !errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("recreating the removed spool directory: %w", err)
		}
	case err != nil:
		return "", fmt.Errorf("checking the spool directory: %w", err)
	case lst.Mode()&os.ModeSymlink != 0:
		return "", fmt.Errorf("%w: %s is now a symbolic link; no segment is created through it", ErrDirReplaced, s.cfg.Dir)
	case !lst.IsDir():
		return "", fmt.Errorf("%w: %s is no longer a directory", ErrDirReplaced, s.cfg.Dir)
	}
	d, err := openDir(s.cfg.Dir, false)
	if err != nil {
		return "", err
	}
	if created && d.info.Mode().Perm() != s.dirMode { // the umask took bits off
		if err := d.f.Chmod(s.dirMode); err != nil {
			s.log.Warn("spool: setting the recreated directory's permissions", "mode", s.dirMode, "err", err)
		}
	}
	old := s.dir
	s.dir = d
	if old.segs == 0 {
		old.close()
	}
	return what, nil
}

// dirFailed logs err once (until the directory works again) and returns it.
func (s *Spool) dirFailed(err error) error {
	if s.dirErr == nil {
		s.log.Error("spool: no usable spool directory for new segments; events the spool cannot take are refused (see the caller's count)",
			"dir", s.cfg.Dir, "err", err)
	}
	s.dirErr = err
	return err
}

// writeBackLocked copies each held segment whose file was unlinked (its
// link count is 0: the spool directory was removed, or the file deleted)
// into a file of the same name in the spool directory, recreated if need
// be, so the next Open replays it instead of the events vanishing when
// the spool closes its descriptor. The copy is whole: records a reader
// already delivered are delivered again after the restart (at least once,
// as for any segment a restart finds). A segment that cannot be written
// back is counted lost (LossRemoved) and logged. Only Close calls it.
func (s *Spool) writeBackLocked() {
	var back, lost, lostRecords int64
	var firstErr error
	loss := func(seg *Segment, err error) {
		lost++
		lostRecords += seg.Records
		firstErr = cmp.Or(firstErr, err)
		if seg.Records > 0 && s.cfg.OnLoss != nil {
			s.cfg.OnLoss(LossRemoved, seg.Records)
		}
	}
	for _, seg := range s.sealed {
		if seg.f == nil {
			// Not held: if its file is gone, nothing can bring it
			// back; count it now, as the next Open cannot.
			var st unix.Stat_t
			if seg.dir != nil && errors.Is(unix.Fstatat(seg.dir.fd, seg.name, &st, unix.AT_SYMLINK_NOFOLLOW), syscall.ENOENT) {
				loss(seg, ErrGone)
			}
			continue
		}
		st, err := seg.f.Stat()
		if err != nil {
			continue
		}
		if sys, ok := st.Sys().(*syscall.Stat_t); !ok || sys.Nlink > 0 {
			continue
		}
		if err := s.writeBack(seg, st.Size()); err != nil {
			loss(seg, err)
			continue
		}
		back++
	}
	if back > 0 {
		s.log.Warn("spool: wrote the segments removed behind the spool's back into the spool directory; the next start replays them",
			"dir", s.cfg.Dir, "segments", back)
	}
	if lost > 0 {
		s.log.Error("spool: segments removed behind the spool's back could not be written back; their events are lost",
			"dir", s.cfg.Dir, "segments", lost, "records", lostRecords, "err", firstErr)
	}
}

// writeBack copies size bytes of seg's held file into a new file of its
// name in the spool directory, fsynced.
func (s *Spool) writeBack(seg *Segment, size int64) error {
	if err := s.checkDirLocked(); err != nil {
		return err
	}
	f, err := s.dir.createSegmentFile(seg.name, seg.Path)
	if err != nil {
		return fmt.Errorf("writing back spool segment: %w", err)
	}
	_, err = io.Copy(f, io.NewSectionReader(seg.f, 0, size))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		s.dir.remove(seg.name, seg.Path)
		return fmt.Errorf("writing back spool segment: %w", err)
	}
	s.dirDirty = true
	return nil
}
