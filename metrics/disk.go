package metrics

import (
	"io/fs"
	"path/filepath"
)

// dirBytes is the total size of the regular files under dir (the Raft log store and the
// snapshots); unreadable entries are skipped.
func dirBytes(dir string) (int64, bool) {
	var total int64
	found := false
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // skip what cannot be read (a snapshot being renamed, say)
		}
		found = true
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
		}
		return nil
	})
	return total, err == nil && found
}
