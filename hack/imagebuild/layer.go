package main

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// runtimeDirs are filled by the container runtime: the layer keeps the directories, never
// their contents.
var runtimeDirs = map[string]bool{"proc": true, "sys": true, "dev": true}

// writeLayer writes the tree at root as an image layer: entries in lexical order, named
// relative to the root without a leading "./" (as Docker writes them), with numeric uid/gid
// and the full mode (setuid, setgid, sticky), hard links as links, symlinks as they are, and
// file capabilities (security.capability) as PAX xattrs. Sockets and device nodes are left
// out; the runtime provides /dev.
func writeLayer(root string, w io.Writer) error {
	tw := tar.NewWriter(w)
	links := map[[2]uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if top, rest, _ := strings.Cut(rel, "/"); runtimeDirs[top] && rest != "" {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no ownership information", p)
		}
		hdr := &tar.Header{
			Name:    rel,
			Mode:    int64(info.Mode().Perm()),
			Uid:     int(st.Uid),
			Gid:     int(st.Gid),
			ModTime: info.ModTime().Truncate(1e9),
			Format:  tar.FormatPAX,
		}
		if info.Mode()&fs.ModeSetuid != 0 {
			hdr.Mode |= 0o4000
		}
		if info.Mode()&fs.ModeSetgid != 0 {
			hdr.Mode |= 0o2000
		}
		if info.Mode()&fs.ModeSticky != 0 {
			hdr.Mode |= 0o1000
		}
		mode := info.Mode()
		switch {
		case mode.IsDir():
			hdr.Typeflag, hdr.Name = tar.TypeDir, rel+"/"
		case mode&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
		case mode&fs.ModeNamedPipe != 0:
			hdr.Typeflag = tar.TypeFifo
		case mode.IsRegular():
			id := [2]uint64{st.Dev, st.Ino}
			if first, ok := links[id]; ok && st.Nlink > 1 {
				hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
				break
			}
			if st.Nlink > 1 {
				links[id] = rel
			}
			hdr.Typeflag, hdr.Size = tar.TypeReg, info.Size()
			if capability := getxattr(p, "security.capability"); capability != "" {
				hdr.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": capability}
			}
		default: // sockets, devices
			return nil
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			n, err := io.Copy(tw, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			if n != hdr.Size {
				return fmt.Errorf("%s changed size while it was archived", rel)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// getxattr reads one extended attribute of a file, "" when it has none.
func getxattr(p, name string) string {
	buf := make([]byte, 256)
	n, err := syscall.Getxattr(p, name, buf)
	if err != nil || n <= 0 {
		return ""
	}
	return string(buf[:n])
}

// writeLayerFile writes root's layer to dst (atomically) and returns its sha256 (the diff ID)
// and size.
func writeLayerFile(root, dst string) (string, int64, error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", 0, err
	}
	tmp := dst + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return "", 0, err
	}
	defer os.Remove(tmp)
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	cw := &countWriter{w: bw}
	if err := writeLayer(root, cw); err != nil {
		f.Close()
		return "", 0, err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return "", 0, err
	}
	if err := f.Close(); err != nil {
		return "", 0, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// extractLayer unpacks a layer written by writeLayer into dir with GNU tar, which restores
// numeric ownership, full modes, hard links and file capabilities as root.
func extractLayer(tarPath, dir string) error {
	cmd := exec.Command("tar", "-x", "-f", tarPath, "-C", dir,
		"--numeric-owner", "--same-owner", "--same-permissions",
		"--xattrs", "--xattrs-include=security.capability")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("tar -x %s: %w: %s", tarPath, err, tail(out, 10))
	}
	return nil
}
