// Package klog stands in for k8s.io/klog/v2: the calls Kepler's model code makes, written to stderr
// (the driver's stdout carries its JSON answer). Verbosity is fixed at 0, as in a default Kepler.
package klog

import (
	"fmt"
	"os"
)

type Verbose bool

func V(level int) Verbose { return Verbose(level <= 0) }

func (v Verbose) Enabled() bool { return bool(v) }

func (v Verbose) Infof(format string, args ...interface{}) {
	if v {
		Infof(format, args...)
	}
}

func (v Verbose) Infoln(args ...interface{}) {
	if v {
		Infoln(args...)
	}
}

func Infof(format string, args ...interface{})    { logf("I", format, args...) }
func Infoln(args ...interface{})                  { logf("I", "%s", fmt.Sprintln(args...)) }
func Warning(args ...interface{})                 { logf("W", "%s", fmt.Sprint(args...)) }
func Warningf(format string, args ...interface{}) { logf("W", format, args...) }
func Errorf(format string, args ...interface{})   { logf("E", format, args...) }

func logf(level, format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, level+" "+format+"\n", args...)
}
