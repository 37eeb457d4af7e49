// Added beside Kepler's unmodified config files by the conformance tier (not Kepler code).
package config

// ConformanceFormatProcessor is Kepler's own processor-name normalisation (spec.go), so the tier can
// check that the model server's machine_spec uses the same name.
func ConformanceFormatProcessor(name string) string { return formatProcessor(name) }
