// Command modproxy lays out Go modules from a working tree as a module
// proxy in a folder, so that GOPROXY=file://FOLDER serves them as if they
// were released. scripts/consumer.sh uses it to check that the
// repository's modules can be fetched with go get from outside.
//
//	modproxy -version v0.2.0 -out FOLDER MODULE_DIR...
//
// For each module folder (one holding a go.mod), it writes what the module
// proxy protocol names, under the module path case-encoded as the protocol
// requires (module.EscapePath: an upper-case letter becomes '!' and its
// lower case):
//
//	FOLDER/<module>/@v/list            the versions, one a line
//	FOLDER/<module>/@v/<version>.info  {"Version":"v0.2.0","Time":"..."}
//	FOLDER/<module>/@v/<version>.mod   the module's go.mod
//	FOLDER/<module>/@v/<version>.zip   the module's files, each under <module>@<version>/
//
// The zip is made by golang.org/x/mod/zip from the files as they are in the
// working tree, committed or not, less the files git ignores (in a git work
// tree, the files "git ls-files --cached --others --exclude-standard"
// names; elsewhere every file). The zip package then leaves out what never
// belongs in a module zip: files of nested modules (folders with a go.mod
// of their own), vendored packages, symbolic links, VCS folders. Each zip
// is checked with zip.CheckZip after it is written.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	"golang.org/x/mod/sumdb/dirhash"
	modzip "golang.org/x/mod/zip"
)

func main() {
	version := flag.String("version", "", "the version to publish the modules at, such as v0.2.0")
	out := flag.String("out", "", "the folder to write the proxy into (created when missing)")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: modproxy -version VERSION -out FOLDER MODULE_DIR...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *version == "" || *out == "" || flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	now := time.Now().UTC().Truncate(time.Second)
	for _, dir := range flag.Args() {
		if err := publish(*out, dir, *version, now); err != nil {
			fmt.Fprintln(os.Stderr, "modproxy:", err)
			os.Exit(1)
		}
	}
}

// publish writes the module in dir at version into the proxy folder out.
func publish(out, dir, version string, now time.Time) error {
	goMod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return err
	}
	path := modfile.ModulePath(goMod)
	if path == "" {
		return fmt.Errorf("%s: go.mod names no module", dir)
	}
	mod := module.Version{Path: path, Version: version}
	if err := module.Check(path, version); err != nil {
		return err
	}
	if module.CanonicalVersion(version) != version {
		return fmt.Errorf("version %q is not canonical", version)
	}
	escPath, err := module.EscapePath(path)
	if err != nil {
		return err
	}
	escVersion, err := module.EscapeVersion(version)
	if err != nil {
		return err
	}
	vdir := filepath.Join(out, filepath.FromSlash(escPath), "@v")
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		return err
	}
	base := filepath.Join(vdir, escVersion)

	checked, source, err := writeZip(base+".zip", mod, dir)
	if err != nil {
		return err
	}
	if _, err := modzip.CheckZip(mod, base+".zip"); err != nil {
		return err
	}
	sum, err := dirhash.HashZip(base+".zip", dirhash.Hash1)
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".mod", goMod, 0o644); err != nil {
		return err
	}
	info, err := json.Marshal(struct {
		Version string
		Time    string
	}{version, now.Format(time.RFC3339)})
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".info", info, 0o644); err != nil {
		return err
	}
	if err := addToList(filepath.Join(vdir, "list"), version); err != nil {
		return err
	}

	fmt.Printf("%s %s (from %s): %d files from %s, %s\n", path, version, dir, len(checked.Valid), source, sum)
	if len(checked.Omitted) > 0 {
		fmt.Printf("  left out %s\n", summarize(checked.Omitted))
	}
	return nil
}

// writeZip writes the zip of the module in dir to name, through a
// temporary file so that a failure leaves no partial zip behind. It returns
// what the zip package made of the files, and where their list came from.
func writeZip(name string, mod module.Version, dir string) (modzip.CheckedFiles, string, error) {
	var checked modzip.CheckedFiles
	files, err := gitFiles(dir)
	if err != nil {
		return checked, "", err
	}
	source := "git: tracked and untracked files, less those it ignores"
	if files == nil {
		source = "the folder: not in a git work tree"
		checked, err = modzip.CheckDir(dir)
	} else {
		checked, err = modzip.CheckFiles(files)
	}
	if err != nil {
		return checked, "", fmt.Errorf("%s: %w", dir, err)
	}

	tmp, err := os.CreateTemp(filepath.Dir(name), ".zip-*")
	if err != nil {
		return checked, "", err
	}
	defer os.Remove(tmp.Name())
	if files == nil {
		err = modzip.CreateFromDir(tmp, mod, dir)
	} else {
		err = modzip.Create(tmp, mod, files)
	}
	if err != nil {
		tmp.Close()
		return checked, "", err
	}
	if err := tmp.Close(); err != nil {
		return checked, "", err
	}
	return checked, source, os.Rename(tmp.Name(), name)
}

// gitFiles returns the files in dir that git tracks or would not ignore,
// as they are in the working tree (a tracked file deleted there is left
// out); nil when dir is not in a git work tree.
func gitFiles(dir string) ([]modzip.File, error) {
	inside, err := exec.Command("git", "-C", dir, "rev-parse", "--is-inside-work-tree").Output()
	if err != nil || strings.TrimSpace(string(inside)) != "true" {
		return nil, nil
	}
	// Paths are relative to dir, slash-separated, and only those under dir.
	cmd := exec.Command("git", "-C", dir, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	list, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git ls-files in %s: %v: %s", dir, err, strings.TrimSpace(stderr.String()))
	}
	files := []modzip.File{}
	seen := map[string]bool{}
	for rel := range strings.SplitSeq(string(list), "\x00") {
		if rel == "" || seen[rel] {
			continue
		}
		seen[rel] = true
		p := filepath.Join(dir, filepath.FromSlash(rel))
		info, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if info.IsDir() {
			continue // a git submodule: never part of the module
		}
		files = append(files, diskFile{rel: rel, path: p, info: info})
	}
	return files, nil
}

// addToList adds version to the proxy's list file, keeping it sorted.
func addToList(name, version string) error {
	data, err := os.ReadFile(name)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	versions := strings.Fields(string(data))
	if !slices.Contains(versions, version) {
		versions = append(versions, version)
	}
	semver.Sort(versions)
	return os.WriteFile(name, []byte(strings.Join(versions, "\n")+"\n"), 0o644)
}

// summarize counts the omitted files by reason, and names the folders of
// nested modules.
func summarize(omitted []modzip.FileError) string {
	count := map[string]int{}
	var reasons, nested []string
	for _, o := range omitted {
		reason := o.Err.Error()
		if count[reason] == 0 {
			reasons = append(reasons, reason)
		}
		count[reason]++
		if filepath.Base(o.Path) == "go.mod" {
			nested = append(nested, filepath.Dir(o.Path)+"/")
		}
	}
	var parts []string
	for _, r := range reasons {
		parts = append(parts, fmt.Sprintf("%d files (%s)", count[r], r))
	}
	s := strings.Join(parts, ", ")
	if len(nested) > 0 {
		slices.Sort(nested)
		s += "; nested modules: " + strings.Join(nested, " ")
	}
	return s
}

// diskFile is a file of the working tree, as modzip.Create reads it.
type diskFile struct {
	rel  string // the path in the module, slash-separated
	path string // the path on disk
	info os.FileInfo
}

func (f diskFile) Path() string                 { return f.rel }
func (f diskFile) Lstat() (os.FileInfo, error)  { return f.info, nil }
func (f diskFile) Open() (io.ReadCloser, error) { return os.Open(f.path) }
