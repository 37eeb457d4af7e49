// Added beside Kepler's unmodified regressor files by the conformance tier (not Kepler code): reads
// out, in full precision, what Kepler's own predictors compute, before Kepler rounds to milliwatts.
package regressor

import "fmt"

// ConformancePredict returns each created predictor's output on the samples added so far, and the
// predictor's Go type (which of linear/logarithmic/logistic/exponential Kepler chose).
func (r *Regressor) ConformancePredict() (map[string][]float64, map[string]string) {
	powers := map[string][]float64{}
	kinds := map[string]string{}
	for component, predictor := range r.modelPredictors {
		kinds[component] = fmt.Sprintf("%T", predictor)
		powers[component] = predictor.predict(r.FloatFeatureNames, r.floatFeatureValues[0:r.xidx],
			r.SystemMetaDataFeatureNames, r.SystemMetaDataFeatureValues)
	}
	return powers, kinds
}
