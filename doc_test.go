package berth_test

import (
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// TestEveryExportedNameDocumented keeps go doc of every package of the core module a
// manual: each package, exported type, function, method, constant, variable and struct
// field (of an exported type) has a doc comment (a group's comment covers its members;
// a field's trailing comment counts), and comments hold no internal notes. internal/,
// commands (package main) and the bench module are not API.
func TestEveryExportedNameDocumented(t *testing.T) {
	var missing []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != "." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "internal" || name == "bench" || name == "tools") {
			return filepath.SkipDir
		}
		if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil && path != "." {
			return filepath.SkipDir // another module
		}
		missing = append(missing, checkPackageDocs(t, path)...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Error(m)
	}
}

// internalNotes are words that belongs in a commit or an issue, not in API docs.
var internalNotes = []string{"TODO", "FIXME", "XXX", "HACK", "WIP"}

// sourceFile matches a Go file name in a doc comment.
var sourceFile = regexp.MustCompile(`\b[a-z0-9_]+\.go\b`)

func checkPackageDocs(t *testing.T, dir string) []string {
	fset := token.NewFileSet()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Every file of every build configuration counts: a doc missing on Linux only is
	// still missing.
	pkgs := map[string][]*ast.File{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		pkgs[f.Name.Name] = append(pkgs[f.Name.Name], f)
	}
	var out []string
	for pname, files := range pkgs {
		if pname == "main" {
			continue
		}
		dp, err := doc.NewFromFiles(fset, files, "github.com/berthnet/berth/"+dir)
		if err != nil {
			t.Fatal(err)
		}
		miss := func(pos token.Pos, what string) {
			out = append(out, fset.Position(pos).String()+": "+what+" has no doc comment")
		}
		note := func(pos token.Pos, what, text string) {
			for _, n := range internalNotes {
				if strings.Contains(text, n) {
					out = append(out, fset.Position(pos).String()+": "+what+"'s doc holds an internal note ("+n+")")
				}
			}
			// Source files are the code's business; a package comment may still map them.
			if pos.IsValid() {
				if f := sourceFile.FindString(text); f != "" {
					out = append(out, fset.Position(pos).String()+": "+what+"'s doc names a source file ("+f+")")
				}
			}
		}
		if strings.TrimSpace(dp.Doc) == "" {
			out = append(out, dir+": package "+pname+" has no package comment")
		}
		note(token.NoPos, "package "+pname, dp.Doc)
		values := func(vs []*doc.Value, kind string) {
			for _, v := range vs {
				for _, spec := range v.Decl.Specs {
					vs := spec.(*ast.ValueSpec)
					for _, n := range vs.Names {
						if !n.IsExported() {
							continue
						}
						if v.Doc == "" && vs.Doc == nil && vs.Comment == nil {
							miss(n.Pos(), kind+" "+n.Name)
						}
					}
				}
				note(v.Decl.Pos(), kind, v.Doc)
			}
		}
		funcs := func(fs []*doc.Func, recv string) {
			for _, f := range fs {
				if !ast.IsExported(f.Name) {
					continue
				}
				if strings.TrimSpace(f.Doc) == "" {
					miss(f.Decl.Pos(), "func "+recv+f.Name)
				}
				note(f.Decl.Pos(), "func "+recv+f.Name, f.Doc)
			}
		}
		values(dp.Consts, "const")
		values(dp.Vars, "var")
		funcs(dp.Funcs, "")
		for _, ty := range dp.Types {
			if strings.TrimSpace(ty.Doc) == "" {
				miss(ty.Decl.Pos(), "type "+ty.Name)
			}
			note(ty.Decl.Pos(), "type "+ty.Name, ty.Doc)
			values(ty.Consts, "const")
			values(ty.Vars, "var")
			funcs(ty.Funcs, "")
			funcs(ty.Methods, ty.Name+".")
			for _, spec := range ty.Decl.Specs {
				ts := spec.(*ast.TypeSpec)
				var fields *ast.FieldList
				switch x := ts.Type.(type) {
				case *ast.StructType:
					fields = x.Fields
				case *ast.InterfaceType:
					fields = x.Methods
				}
				if fields == nil {
					continue
				}
				// A comment on a field carries on over the fields that follow it
				// without one of their own, as in a block of related fields.
				covered := false
				for _, f := range fields.List {
					has := f.Doc != nil || f.Comment != nil
					if has {
						covered = true
					} else if len(f.Names) > 0 && covered && prevAdjacent(fset, fields, f) {
						has = true
					}
					if !has {
						covered = false
					}
					for _, n := range f.Names {
						if n.IsExported() && !has {
							miss(n.Pos(), "field "+ty.Name+"."+n.Name)
						}
					}
				}
			}
		}
	}
	return out
}

// prevAdjacent reports whether f directly follows the field before it (no blank line).
func prevAdjacent(fset *token.FileSet, fl *ast.FieldList, f *ast.Field) bool {
	for i, g := range fl.List {
		if g == f && i > 0 {
			return fset.Position(f.Pos()).Line == fset.Position(fl.List[i-1].End()).Line+1
		}
	}
	return false
}
