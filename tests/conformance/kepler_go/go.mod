// The module assembled at test time (tests/conformance/kepler.py): Kepler's own files, copied unmodified
// from ../shared/reference/kepler-go/<version>/pkg, plus the stand-ins, hooks and driver of this folder.
// Its path is Kepler's, so Kepler's imports resolve to those files; nothing is downloaded.
module github.com/sustainable-computing-io/kepler

go 1.19

require (
	github.com/shirou/gopsutil v0.0.0
	golang.org/x/sys v0.0.0
	k8s.io/klog/v2 v2.0.0
)

replace (
	github.com/shirou/gopsutil => ./standin/gopsutil
	golang.org/x/sys => ./standin/xsys
	k8s.io/klog/v2 => ./standin/klog
)
