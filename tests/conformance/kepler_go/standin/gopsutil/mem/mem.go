// Package mem stands in for gopsutil's (see ../cpu).
package mem

import "errors"

type VirtualMemoryStat struct {
	Total uint64
}

func VirtualMemory() (*VirtualMemoryStat, error) {
	return nil, errors.New("memory discovery is not part of the conformance stand-in")
}
