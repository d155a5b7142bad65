package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// resolveIn maps an absolute path inside an image root to a host path, resolving symlinks as
// the image would see them (an absolute link target is relative to root, ".." stops at
// root), so nothing written through it can land outside the root. With followLast false the
// last element is not resolved (COPY replaces a symlink rather than writing through it).
func resolveIn(root, p string, followLast bool) (string, error) {
	parts := strings.Split(strings.TrimPrefix(path.Clean("/"+p), "/"), "/")
	cur := "/"
	for hops := 0; len(parts) > 0; {
		part := parts[0]
		parts = parts[1:]
		if part == "" || part == "." {
			continue
		}
		if part == ".." {
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, part)
		if len(parts) == 0 && !followLast {
			cur = next
			break
		}
		info, err := os.Lstat(filepath.Join(root, next))
		if err != nil || info.Mode()&fs.ModeSymlink == 0 {
			cur = next // missing elements are created later by the caller
			continue
		}
		if hops++; hops > 255 {
			return "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			cur = "/"
		}
		parts = append(strings.Split(target, "/"), parts...)
	}
	return filepath.Join(root, filepath.FromSlash(cur)), nil
}

// readImageFile reads a file of an image root (through its symlinks, inside the root).
func readImageFile(root, p string) ([]byte, error) {
	hp, err := resolveIn(root, p, true)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(hp)
}

// lookupUser resolves a USER or --chown spec ("", "uid", "name", "uid:gid", "name:group")
// against the image's /etc/passwd and /etc/group, as a container runtime does: a user
// without a group gets its passwd group, or 0 when it has no passwd entry. It also returns
// the home directory RUN gets as HOME.
func lookupUser(root, spec string) (uid, gid int, home string, err error) {
	if spec == "" {
		spec = "0"
	}
	user, group, hasGroup := strings.Cut(spec, ":")
	passwd, _ := readImageFile(root, "/etc/passwd")
	home = "/"
	uid = -1
	for _, line := range strings.Split(string(passwd), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 7 {
			continue
		}
		if f[0] == user || f[2] == user {
			uid, _ = strconv.Atoi(f[2])
			gid, _ = strconv.Atoi(f[3])
			home = f[5]
			break
		}
	}
	if uid < 0 {
		if uid, err = strconv.Atoi(user); err != nil {
			return 0, 0, "", fmt.Errorf("user %q is not in the image's /etc/passwd (use a numeric uid)", user)
		}
		gid = 0
		if uid == 0 {
			home = "/root"
		}
	}
	if !hasGroup {
		return uid, gid, home, nil
	}
	if gid, err = strconv.Atoi(group); err == nil {
		return uid, gid, home, nil
	}
	groups, _ := readImageFile(root, "/etc/group")
	for _, line := range strings.Split(string(groups), "\n") {
		if f := strings.Split(line, ":"); len(f) >= 3 && f[0] == group {
			gid, err = strconv.Atoi(f[2])
			return uid, gid, home, err
		}
	}
	return 0, 0, "", fmt.Errorf("group %q is not in the image's /etc/group (use a numeric gid)", group)
}

// mkdirOp carries out WORKDIR: create the directory (and parents) when missing, owned by the
// current USER as BuildKit does; an existing directory is left as it is.
func mkdirOp(root string, o op) error {
	uid, gid, _, err := lookupUser(root, o.User)
	if err != nil {
		return err
	}
	return mkdirAllOwned(root, o.Dir, 0o755, uid, gid)
}

// mkdirAllOwned creates the missing directories of p inside root with mode and owner.
func mkdirAllOwned(root, p string, mode fs.FileMode, uid, gid int) error {
	hp, err := resolveIn(root, p, true)
	if err != nil {
		return err
	}
	if info, err := os.Stat(hp); err == nil {
		if !info.IsDir() {
			return fmt.Errorf("%s exists in the image and is not a directory", p)
		}
		return nil
	}
	if parent := path.Dir(path.Clean(p)); parent != path.Clean(p) {
		if err := mkdirAllOwned(root, parent, 0o755, uid, gid); err != nil {
			return err
		}
	}
	if err := os.Mkdir(hp, mode); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := os.Chmod(hp, mode); err != nil { // not subject to the umask
		return err
	}
	return os.Lchown(hp, uid, gid)
}

// copyOp carries out COPY as BuildKit does: a directory source copies its contents; several
// sources, or a destination ending in "/" or naming a directory, copy into that directory;
// files keep their mode unless --chmod, and belong to root unless --chown (resolved in the
// destination image). Missing destination directories are created with the same owner.
func (b *builder) copyOp(ctx context.Context, root string, o op) error {
	uid, gid := 0, 0
	if o.Chown != "" {
		var err error
		if uid, gid, _, err = lookupUser(root, o.Chown); err != nil {
			return err
		}
	}
	var chmod fs.FileMode
	if o.Chmod != "" {
		m, _ := strconv.ParseUint(o.Chmod, 8, 32)
		chmod = fs.FileMode(m)
	}
	srcRoot := ""
	switch {
	case o.srcStage != nil:
		var err error
		if srcRoot, err = b.stageRoot(ctx, o.srcStage); err != nil {
			return err
		}
	case o.FromHost:
		// host artifacts: absolute host paths
	default:
		srcRoot = b.root
	}
	intoDir := strings.HasSuffix(o.Dest, "/") || len(o.Srcs) > 1
	dest := path.Clean(o.Dest)
	if hp, err := resolveIn(root, dest, true); err == nil {
		if info, err := os.Stat(hp); err == nil && info.IsDir() {
			intoDir = true
		}
	}
	for _, s := range o.Srcs {
		var src string
		switch {
		case o.srcStage != nil:
			var err error
			if src, err = resolveIn(srcRoot, s, true); err != nil {
				return err
			}
		case srcRoot == "":
			src = s
		default:
			src = filepath.Join(srcRoot, s)
		}
		info, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("COPY source %s: %w", s, err)
		}
		target := dest
		if info.IsDir() {
			// A directory the COPY creates takes the source directory's mode (or --chmod);
			// an existing one keeps its own.
			mode := info.Mode().Perm()
			if chmod != 0 {
				mode = chmod
			}
			if err := mkdirAllOwned(root, dest, mode, uid, gid); err != nil {
				return err
			}
		} else if intoDir {
			if err := mkdirAllOwned(root, dest, 0o755, uid, gid); err != nil {
				return err
			}
			target = path.Join(dest, filepath.Base(src))
		} else if err := mkdirAllOwned(root, path.Dir(dest), 0o755, uid, gid); err != nil {
			return err
		}
		if err := copyTree(src, root, target, uid, gid, chmod); err != nil {
			return err
		}
	}
	return nil
}

// copyTree copies src (file, symlink or directory contents) to target inside root.
func copyTree(src, root, target string, uid, gid int, chmod fs.FileMode) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		t := path.Join(target, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		if p == src && !info.IsDir() {
			// The named source itself is followed when it is a symlink, as in BuildKit.
			if info, err = os.Stat(p); err != nil {
				return err
			}
		}
		hp, err := resolveIn(root, t, false)
		if err != nil {
			return err
		}
		mode := info.Mode().Perm() | info.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)
		if chmod != 0 {
			mode = chmod
		}
		switch {
		case info.IsDir():
			if p == src {
				return nil // its contents go into target, which the caller created
			}
			if err := os.Mkdir(hp, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			_ = os.RemoveAll(hp)
			if err := os.Symlink(link, hp); err != nil {
				return err
			}
			return os.Lchown(hp, uid, gid)
		case info.Mode().IsRegular():
			if err := copyFile(p, hp); err != nil {
				return err
			}
		default:
			return fmt.Errorf("COPY %s: only files, directories and symlinks are implemented", p)
		}
		if err := os.Lchown(hp, uid, gid); err != nil {
			return err
		}
		if err := os.Chmod(hp, mode); err != nil { // after chown, which clears setuid
			return err
		}
		return os.Chtimes(hp, info.ModTime(), info.ModTime())
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if info, err := os.Lstat(dst); err == nil && !info.Mode().IsRegular() {
		if err := os.RemoveAll(dst); err != nil {
			return err
		}
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
