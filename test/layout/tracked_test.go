package layout_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// maxTrackedSize is the largest file the repository may track. Build
// outputs, databases and captures belong in .gitignore or a release, not in
// git history, which every clone downloads forever.
const maxTrackedSize = 1 << 20

// binaryMagics are the first bytes of executable formats: ELF, Mach-O (both
// byte orders, 32 and 64 bit, universal), PE/COFF ("MZ") and WebAssembly.
var binaryMagics = []struct {
	name  string
	magic []byte
}{
	{"ELF executable", []byte{0x7f, 'E', 'L', 'F'}},
	{"Mach-O executable", []byte{0xfe, 0xed, 0xfa, 0xce}},
	{"Mach-O executable", []byte{0xfe, 0xed, 0xfa, 0xcf}},
	{"Mach-O executable", []byte{0xce, 0xfa, 0xed, 0xfe}},
	{"Mach-O executable", []byte{0xcf, 0xfa, 0xed, 0xfe}},
	{"Mach-O universal binary", []byte{0xca, 0xfe, 0xba, 0xbe}},
	{"Windows executable", []byte{'M', 'Z'}},
	{"WebAssembly module", []byte{0x00, 'a', 's', 'm'}},
}

// trackedFile is one entry of the git index.
type trackedFile struct {
	mode string // "100644", "100755", "120000" (symlink), "160000" (submodule)
	path string
}

// trackedFiles lists the index of the repository at dir with its modes.
func trackedFiles(t *testing.T, dir string) []trackedFile {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "-C", dir, "ls-files", "-s", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	var files []trackedFile
	for rec := range bytes.SplitSeq(out, []byte{0}) {
		if len(rec) == 0 {
			continue
		}
		// "<mode> <object> <stage>\t<path>"
		meta, path, ok := bytes.Cut(rec, []byte{'\t'})
		if !ok {
			t.Fatalf("git ls-files -s: unexpected record %q", rec)
		}
		files = append(files, trackedFile{mode: string(bytes.Fields(meta)[0]), path: string(path)})
	}
	return files
}

// checkTracked returns why a tracked file must not be in the repository, or
// "" when it may. size is the file's size, head its first bytes.
func checkTracked(f trackedFile, size int64, head []byte) string {
	if size > maxTrackedSize {
		return fmt.Sprintf("%d bytes, over the 1 MiB limit for tracked files", size)
	}
	for _, m := range binaryMagics {
		if bytes.HasPrefix(head, m.magic) {
			return fmt.Sprintf("a compiled binary (%s); build outputs belong in .gitignore", m.name)
		}
	}
	if f.mode == "100755" && !bytes.HasPrefix(head, []byte("#!")) {
		return "executable bit set but no #! line: only scripts may be executable"
	}
	return ""
}

// checkRepo returns one problem per offending tracked file of the
// repository at dir (paths relative to it).
func checkRepo(t *testing.T, dir string) []string {
	t.Helper()
	files := trackedFiles(t, dir)
	if len(files) == 0 {
		t.Fatalf("git ls-files lists nothing in %s", dir)
	}
	var problems []string
	for _, f := range files {
		if f.mode == "160000" || f.mode == "120000" {
			continue // submodule or symlink: no content of its own here
		}
		p := filepath.Join(dir, f.path)
		fi, err := os.Lstat(p)
		if os.IsNotExist(err) {
			continue // deleted in the work tree, not yet committed
		}
		if err != nil {
			t.Fatal(err)
		}
		fh, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		head := make([]byte, 8)
		n, _ := fh.Read(head)
		fh.Close()
		if why := checkTracked(f, fi.Size(), head[:n]); why != "" {
			problems = append(problems, f.path+": "+why)
		}
	}
	return problems
}

func needGit(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed: cannot list the tracked files")
	}
}

// TestNoBinaryOrLargeFileTracked checks every file git tracks: none over
// 1 MiB, none a compiled executable, and the executable bit only on scripts.
func TestNoBinaryOrLargeFileTracked(t *testing.T) {
	needGit(t)
	root := filepath.Join("..", "..")
	if err := exec.Command("git", "-C", root, "rev-parse", "--git-dir").Run(); err != nil {
		t.Skipf("%s is not a git checkout (a source tarball?): nothing tracked to check", root)
	}
	for _, p := range checkRepo(t, root) {
		t.Error(p)
	}
}

// TestTrackedCheckCatchesBinaries builds a repository with the kinds of file
// the check exists for (a Go binary committed at the root, a large capture,
// an executable text file) and asserts each is reported, and a script is not.
func TestTrackedCheckCatchesBinaries(t *testing.T) {
	needGit(t)
	dir := t.TempDir()
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q")
	write := func(name string, data []byte, mode os.FileMode) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), data, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("originlens", append([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1}, make([]byte, 100)...), 0o755)
	write("app.exe", append([]byte("MZ"), make([]byte, 100)...), 0o644)
	write("capture.pcap", make([]byte, maxTrackedSize+1), 0o644)
	write("notes.txt", []byte("not a script\n"), 0o755)
	write("run.sh", []byte("#!/bin/sh\necho ok\n"), 0o755)
	write("README.md", []byte("# ok\n"), 0o644)
	git("add", ".")
	got := strings.Join(checkRepo(t, dir), "\n")
	for _, want := range []string{"originlens: a compiled binary (ELF", "app.exe: a compiled binary (Windows", "capture.pcap: 1048577 bytes", "notes.txt: executable bit set"} {
		if !strings.Contains(got, want) {
			t.Errorf("check missed %q; it reported:\n%s", want, got)
		}
	}
	for _, ok := range []string{"run.sh", "README.md"} {
		if strings.Contains(got, ok+":") {
			t.Errorf("check wrongly reported %s:\n%s", ok, got)
		}
	}
}

// TestBuildOutputsIgnored checks that what `make build`, `make package`,
// `go build ./cmd/...` at the root and `make test` write is ignored by git.
func TestBuildOutputsIgnored(t *testing.T) {
	needGit(t)
	root := filepath.Join("..", "..")
	if err := exec.Command("git", "-C", root, "rev-parse", "--git-dir").Run(); err != nil {
		t.Skipf("%s is not a git checkout: no .gitignore to check", root)
	}
	cmds, err := os.ReadDir(filepath.Join(root, "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	paths := []string{"bin/app", "dist/originlens-v1-linux-amd64.tar.gz", "testoutput/test.json", "originlens", "x.test", "cpu.prof"}
	for _, c := range cmds {
		if c.IsDir() {
			paths = append(paths, c.Name(), "bin/"+c.Name())
		}
	}
	for _, p := range paths {
		// check-ignore exits 0 when the path is ignored, 1 when not.
		err := exec.Command("git", "-C", root, "check-ignore", "-q", "--no-index", p).Run()
		if err != nil {
			t.Errorf("%s is not ignored by .gitignore (a build output would show up in git status)", p)
		}
	}
}
