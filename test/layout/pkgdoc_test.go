// Package layout_test checks repository-wide conventions of the house style:
// every Go package has exactly one package doc comment, and no package is
// named util, common, models or helpers.
package layout_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOnePackageDocPerPackage(t *testing.T) {
	root := filepath.Join("..", "..")
	dirs := map[string][]string{} // dir -> non-test .go files
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules" || name == "bin" || name == "dist") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			dirs[filepath.Dir(path)] = append(dirs[filepath.Dir(path)], path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 10 {
		t.Fatalf("found only %d package directories under %s; the walk is broken", len(dirs), root)
	}
	for dir, files := range dirs {
		var withDoc []string
		pkgName := ""
		for _, f := range files {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			fset := token.NewFileSet()
			af, err := parser.ParseFile(fset, f, src, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatalf("parsing %s: %v", f, err)
			}
			if strings.Contains(string(src), "//go:build tools") {
				continue
			}
			pkgName = af.Name.Name
			if af.Doc != nil {
				withDoc = append(withDoc, filepath.Base(f))
			}
		}
		if pkgName == "" {
			continue
		}
		rel, _ := filepath.Rel(root, dir)
		switch {
		case len(withDoc) == 0:
			t.Errorf("%s: no package doc comment", rel)
		case len(withDoc) > 1:
			t.Errorf("%s: package doc in %d files (%s); keep one", rel, len(withDoc), strings.Join(withDoc, ", "))
		}
		switch pkgName {
		case "util", "utils", "common", "models", "helpers", "misc":
			t.Errorf("%s: package %s says nothing about what it provides", rel, pkgName)
		}
	}
}
