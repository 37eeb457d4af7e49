// Added beside Kepler's unmodified sidecar client by the conformance tier (not Kepler code).
package sidecar

import "fmt"

// ConformanceRequest sends the samples added so far with Kepler's own makeRequest and returns the
// per-component powers it decoded (0.7.11 has no core ratio: 0 is returned).
func (c *EstimatorSidecar) ConformanceRequest() (map[string][]float64, float64, error) {
	answer, err := c.makeRequest(c.floatFeatureValues[0:c.xidx], c.SystemMetaDataFeatureValues)
	if err != nil {
		return nil, 0, err
	}
	powers, ok := answer.(map[string][]float64)
	if !ok {
		return nil, 0, fmt.Errorf("unexpected powers %T", answer)
	}
	return powers, 0, nil
}
