// Command conformance runs Kepler's own model-reading code (the regressor estimator and the sidecar
// client, compiled from a release tag) on cases read as JSON from stdin, and writes one JSON result per
// case to stdout. It is built and driven by tests/conformance (see kepler.py there); the version-
// specific glue (how Kepler's config and structs differ between tags) is in version.go beside it.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/sustainable-computing-io/kepler/pkg/config"
	"github.com/sustainable-computing-io/kepler/pkg/model/estimator/sidecar"
	"github.com/sustainable-computing-io/kepler/pkg/model/types"
)

// Case is one way Kepler gets a model: Mode "regressor" (Endpoint = model server /model, else URL,
// else File, in Kepler's order) or "sidecar" (Socket).
type Case struct {
	ID             string          `json:"id"`
	Mode           string          `json:"mode"`
	Endpoint       string          `json:"endpoint"`
	URL            string          `json:"url"`
	File           string          `json:"file"`
	Socket         string          `json:"socket"`
	OutputType     string          `json:"output_type"`
	Source         string          `json:"source"`
	Trainer        string          `json:"trainer"`
	Filter         string          `json:"filter"`
	Features       []string        `json:"features"`
	SystemFeatures []string        `json:"system_features"`
	SystemValues   []string        `json:"system_values"`
	Rows           [][]float64     `json:"rows"`
	BatchRows      int             `json:"batch_rows"`
	RequestSpec    json.RawMessage `json:"request_spec"`    // 0.7.12's config.MachineSpec
	DiscoveredSpec json.RawMessage `json:"discovered_spec"` // 0.7.12's config.MachineSpec
	Processor      string          `json:"processor"`
}

type Result struct {
	ID         string               `json:"id"`
	Error      string               `json:"error,omitempty"`
	Panic      string               `json:"panic,omitempty"`
	Trainer    string               `json:"trainer"`
	Predictors map[string]string    `json:"predictors,omitempty"`
	Powers     map[string][]float64 `json:"powers,omitempty"`
	Milliwatts interface{}          `json:"milliwatts,omitempty"`
	CoreRatio  float64              `json:"core_ratio,omitempty"`
	Processor  string               `json:"processor,omitempty"`
}

type Input struct {
	Cases []Case `json:"cases"`
}

func main() {
	var input Input
	if err := json.NewDecoder(os.Stdin).Decode(&input); err != nil {
		fmt.Fprintf(os.Stderr, "conformance driver: bad input: %v\n", err)
		os.Exit(2)
	}
	results := make([]Result, 0, len(input.Cases))
	for _, c := range input.Cases {
		results = append(results, run(c))
	}
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(map[string]interface{}{"version": keplerVersion, "results": results}); err != nil {
		os.Exit(3)
	}
}

// run isolates each case: a panic in Kepler's code is recorded as the case's result (in Kepler it
// would crash the exporter).
func run(c Case) (result Result) {
	result.ID = c.ID
	defer func() {
		if p := recover(); p != nil {
			result.Panic = fmt.Sprintf("%v\n%s", p, debug.Stack())
		}
	}()
	var err error
	switch c.Mode {
	case "regressor":
		err = runRegressor(c, &result)
	case "sidecar":
		err = runSidecar(c, &result)
	case "processor": // Kepler's normalised processor name (0.7.12; empty for 0.7.11, which has none)
		result.Processor = formatProcessor(c.Processor)
	default:
		err = fmt.Errorf("unknown mode %q", c.Mode)
	}
	if err != nil {
		result.Error = err.Error()
	}
	return result
}

func outputType(name string) types.ModelOutputType {
	if name == types.DynPower.String() {
		return types.DynPower
	}
	return types.AbsPower
}

func runRegressor(c Case, result *Result) error {
	configureModelServer(c.Endpoint)
	r, err := newRegressor(c)
	if err != nil {
		return err
	}
	if err := r.Start(); err != nil {
		result.Trainer = r.TrainerName
		return fmt.Errorf("Start: %w", err)
	}
	result.Trainer = r.TrainerName
	for _, row := range c.Rows {
		r.AddNodeFeatureValues(row)
	}
	result.Powers, result.Predictors = r.ConformancePredict()
	// Kepler's own exported path too (rounding to milliwatts, the component fix-ups): it must not fail.
	if _, isPlatform := result.Powers[config.PLATFORM]; isPlatform {
		result.Milliwatts, err = r.GetPlatformPower(false)
	} else {
		result.Milliwatts, err = r.GetComponentsPower(false)
	}
	if err != nil {
		return fmt.Errorf("Get*Power: %w", err)
	}
	return nil
}

func runSidecar(c Case, result *Result) error {
	s := &sidecar.EstimatorSidecar{
		Socket:                      c.Socket,
		OutputType:                  outputType(c.OutputType),
		EnergySource:                c.Source,
		TrainerName:                 c.Trainer,
		SelectFilter:                c.Filter,
		FloatFeatureNames:           c.Features,
		SystemMetaDataFeatureNames:  c.SystemFeatures,
		SystemMetaDataFeatureValues: c.SystemValues,
	}
	if err := s.Start(); err != nil {
		return fmt.Errorf("Start: %w", err)
	}
	batch := c.BatchRows
	if batch <= 0 {
		batch = 10
	}
	result.Powers = map[string][]float64{}
	for start := 0; start < len(c.Rows); start += batch {
		end := start + batch
		if end > len(c.Rows) {
			end = len(c.Rows)
		}
		s.ResetSampleIdx()
		for _, row := range c.Rows[start:end] {
			s.AddNodeFeatureValues(row)
		}
		powers, coreRatio, err := s.ConformanceRequest()
		if err != nil {
			return fmt.Errorf("request rows %d-%d: %w", start, end, err)
		}
		for component, values := range powers {
			result.Powers[component] = append(result.Powers[component], values...)
		}
		result.CoreRatio = coreRatio
	}
	var err error
	if _, isPlatform := result.Powers[config.PLATFORM]; isPlatform {
		result.Milliwatts, err = s.GetPlatformPower(false)
	} else {
		result.Milliwatts, err = s.GetComponentsPower(false)
	}
	if err != nil {
		return fmt.Errorf("Get*Power: %w", err)
	}
	return nil
}
