package lint

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/piledger/piledger"

// allowed lists, for each top-level area of the module, the areas of the
// module it may import. Dependencies point one way:
// cmd → api → {projections, ledger, crypto} → proto.
var allowed = map[string][]string{
	"proto":       {"proto"},
	"crypto":      {"crypto", "proto"},
	"ledger":      {"ledger", "crypto", "proto"},
	"projections": {"projections", "ledger", "crypto", "proto"},
	"api":         {"api", "projections", "ledger", "crypto", "proto"},
	"cmd":         {"cmd", "api", "projections", "ledger", "crypto", "proto", "internal"},
	"internal":    {"internal", "projections", "ledger", "crypto", "proto"},
}

// forbidden imports anywhere in the module.
var forbidden = map[string]string{
	"github.com/google/tink/go": "archived in 2024; use github.com/tink-crypto/tink-go/v2",
}

// cleartextKeysets may be imported by this one file only: the local KEK
// provider, which must read and write its keyset file.
const (
	cleartextKeysets    = "github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	cleartextKeysetFile = "crypto/kek_local.go"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("repository root not found at %s", dir)
	}
	return dir
}

// goFiles returns every .go file of the module, relative to root, with its
// imports. Generated code is included: it must obey the rules too.
func goFiles(t *testing.T, root string) map[string][]string {
	t.Helper()
	files := make(map[string][]string)
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "data") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			files[filepath.ToSlash(rel)] = append(files[filepath.ToSlash(rel)], p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func area(rel string) string {
	return strings.SplitN(rel, "/", 2)[0]
}

func TestDependencyDirection(t *testing.T) {
	files := goFiles(t, repoRoot(t))
	if len(files) == 0 {
		t.Fatal("no Go files found")
	}
	for file, imports := range files {
		from := area(file)
		ok, known := allowed[from]
		if !known {
			t.Errorf("%s: Go code outside the known top-level folders", file)
			continue
		}
		for _, imp := range imports {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			to := area(strings.TrimPrefix(imp, module+"/"))
			if !slices.Contains(ok, to) {
				t.Errorf("%s imports %s: %s must not depend on %s", file, imp, from, to)
			}
		}
	}
}

func TestForbiddenImports(t *testing.T) {
	for file, imports := range goFiles(t, repoRoot(t)) {
		for _, imp := range imports {
			for bad, why := range forbidden {
				if imp == bad || strings.HasPrefix(imp, bad+"/") {
					t.Errorf("%s imports %s: %s", file, imp, why)
				}
			}
			if imp == cleartextKeysets && file != cleartextKeysetFile && !strings.HasSuffix(file, "_test.go") {
				t.Errorf("%s imports %s: only %s may handle cleartext keysets", file, imp, cleartextKeysetFile)
			}
		}
	}
}
