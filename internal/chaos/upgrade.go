package chaos

import (
	"archive/tar"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ErrNoHistory is returned (wrapped) by BuildBinaryAt when the commit cannot be read: not a
// git checkout, no git command, or a clone without that commit (a shallow one).
var ErrNoHistory = errors.New("git history not available")

// moduleRoot returns the directory of the go.mod of the module this package is in.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the txcoord module (go env GOMOD is empty)")
	}
	return filepath.Dir(gomod), nil
}

// gitIn runs git in dir. safe.directory names dir, so that a clone owned by another user
// (CI runs as root) can still be read; the commands used here only read.
func gitIn(ctx context.Context, dir string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-c", "safe.directory=" + dir, "-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	return cmd
}

// BuildBinaryAt builds ./cmd/txcoord as it was at commit (any revision git understands)
// into dir and returns the binary's path (dir/txcoord-<short hash>). The source comes from
// `git archive <commit>` of the clone this package is in, unpacked into a temporary
// directory under dir that is removed before BuildBinaryAt returns (also on failure); the
// repository itself is not touched (no worktree, no checkout). The build uses the same `go`
// command as BuildBinary with GOTOOLCHAIN=local (the same toolchain, whatever the old
// go.mod says), CGO_ENABLED=0, -trimpath, the commit stamped as version.Commit; modules come from the shared
// module cache (or the Go proxy). An unreadable commit is an ErrNoHistory.
func BuildBinaryAt(ctx context.Context, commit, dir string) (string, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", err
	}
	if _, err := exec.LookPath("git"); err != nil {
		return "", fmt.Errorf("%w: no git command: %v", ErrNoHistory, err)
	}
	top, err := gitIn(ctx, root, "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return "", fmt.Errorf("%w: %s is not a git checkout: %v", ErrNoHistory, root, exitDetail(err))
	}
	topDir := strings.TrimSpace(string(top))
	full, err := gitIn(ctx, root, "rev-parse", "--verify", "--quiet", commit+"^{commit}").Output()
	if err != nil {
		hint := ""
		if sh, _ := gitIn(ctx, root, "rev-parse", "--is-shallow-repository").Output(); strings.TrimSpace(string(sh)) == "true" {
			hint = " (this is a shallow clone: `git fetch --unshallow` fetches the history)"
		}
		return "", fmt.Errorf("%w: commit %s is not in the history of %s%s", ErrNoHistory, commit, topDir, hint)
	}
	hash := strings.TrimSpace(string(full))
	short := hash[:min(len(hash), 12)]
	rel, err := filepath.Rel(topDir, root)
	if err != nil {
		return "", err
	}

	src, err := os.MkdirTemp(dir, "src-"+short+"-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(src)
	if err := extractCommit(ctx, topDir, hash, src); err != nil {
		return "", fmt.Errorf("git archive %s: %w", short, err)
	}
	bin := filepath.Join(dir, "txcoord-"+short)
	// The commit is stamped as `make build` does (builds before the version package just
	// ignore the -X).
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-X github.com/txcoord/txcoord/version.Commit="+short, "-o", bin, "./cmd/txcoord")
	cmd.Dir = filepath.Join(src, rel)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=local")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/txcoord at %s: %v\n%s", short, err, b)
	}
	return bin, nil
}

// extractCommit unpacks `git archive <hash>` of the repository at top into dst.
func extractCommit(ctx context.Context, top, hash, dst string) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := gitIn(ctx, top, "archive", "--format=tar", hash)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			cancel()
		}
		if werr := cmd.Wait(); werr != nil && err == nil {
			err = fmt.Errorf("%v: %s", werr, strings.TrimSpace(stderr.String()))
		}
	}()
	tr := tar.NewReader(out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if !filepath.IsLocal(h.Name) {
			if h.Typeflag == tar.TypeXGlobalHeader {
				continue
			}
			return fmt.Errorf("archive entry %q leaves the directory", h.Name)
		}
		path := filepath.Join(dst, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o777|0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(h.Linkname, path); err != nil {
				return err
			}
		case tar.TypeXGlobalHeader: // git archive's commit id
		default:
			return fmt.Errorf("archive entry %q: unexpected type %q", h.Name, h.Typeflag)
		}
	}
}

func exitDetail(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return strings.TrimSpace(string(ee.Stderr))
	}
	return err.Error()
}

// Snapshots counts the complete Raft snapshots in node n's data directory (hashicorp/raft's
// file store: snapshots/<term>-<index>-<ms>/meta.json; one being written ends in .tmp).
func (c *Cluster) Snapshots(n *Node) int {
	entries, _ := os.ReadDir(filepath.Join(c.Dir, "node-"+n.ID, "snapshots"))
	k := 0
	for _, e := range entries {
		if e.IsDir() && !strings.HasSuffix(e.Name(), ".tmp") {
			if _, err := os.Stat(filepath.Join(c.Dir, "node-"+n.ID, "snapshots", e.Name(), "meta.json")); err == nil {
				k++
			}
		}
	}
	return k
}

// GoVersionOf returns the Go toolchain version a binary was built with (e.g. "go1.26.8").
func GoVersionOf(bin string) (string, error) {
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return "", err
	}
	return info.GoVersion, nil
}

// The GET /v1/cluster fields of feature gating (new builds only): the feature level the
// cluster has enabled, and the version of the build each node runs. Rename them here.
const (
	FeatureLevelField = "featureLevel"
	VersionField      = "version"
)

// Features is what GET /v1/cluster says about feature gating on one node.
type Features struct {
	Level   int               // the cluster's enabled feature level; 0 when the field is absent
	HasFlag bool              // the field was present (a build that knows feature gating)
	Version string            // the node's own build version, "" if not reported
	Members map[string]string // member id -> version, where the member list reports one
}

func (f Features) String() string {
	s := fmt.Sprintf("level=%d", f.Level)
	if !f.HasFlag {
		s += " (no " + FeatureLevelField + " field)"
	}
	if f.Version != "" {
		s += " version=" + f.Version
	}
	return s
}

// Features reads node n's feature-gating fields from GET /v1/cluster.
func (c *Cluster) Features(ctx context.Context, n *Node, timeout time.Duration) (Features, error) {
	var doc map[string]json.RawMessage
	if err := getJSON(ctx, c.http, n.URL+"/v1/cluster", timeout, &doc); err != nil {
		return Features{}, err
	}
	var f Features
	if raw, ok := doc[FeatureLevelField]; ok {
		if err := json.Unmarshal(raw, &f.Level); err != nil {
			return Features{}, fmt.Errorf("node %s: %s is %s, not an integer", n.ID, FeatureLevelField, raw)
		}
		f.HasFlag = true
	}
	if raw, ok := doc[VersionField]; ok {
		_ = json.Unmarshal(raw, &f.Version)
	}
	var members []map[string]json.RawMessage
	if raw, ok := doc["members"]; ok && json.Unmarshal(raw, &members) == nil {
		for _, m := range members {
			var id, v string
			_ = json.Unmarshal(m["id"], &id)
			if raw, ok := m[VersionField]; ok && json.Unmarshal(raw, &v) == nil {
				if f.Members == nil {
					f.Members = map[string]string{}
				}
				f.Members[id] = v
			}
		}
	}
	return f, nil
}
