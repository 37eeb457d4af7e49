// Package utils stands in for Kepler's pkg/utils (not part of the reference copy): the one helper
// Kepler 0.7.12's config/spec.go calls.
package utils

import "os"

func IsFileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
