// Package unix stands in for golang.org/x/sys/unix: the uname call Kepler's config reads the kernel
// release with.
package unix

import "syscall"

type Utsname struct {
	Release [65]byte
}

func Uname(u *Utsname) error {
	var raw syscall.Utsname
	if err := syscall.Uname(&raw); err != nil {
		return err
	}
	for i, c := range raw.Release {
		u.Release[i] = byte(c)
	}
	return nil
}
