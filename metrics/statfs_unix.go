//go:build linux || darwin

package metrics

import "syscall"

// fsSpace returns the size of the filesystem holding path and the bytes available to an
// unprivileged process on it.
func fsSpace(path string) (size, avail uint64, ok bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, 0, false
	}
	bs := uint64(st.Bsize)
	return uint64(st.Blocks) * bs, uint64(st.Bavail) * bs, true
}
