package main

import (
	"encoding/json"

	"github.com/sustainable-computing-io/kepler/pkg/config"
	"github.com/sustainable-computing-io/kepler/pkg/model/estimator/local/regressor"
)

const keplerVersion = "v0.7.12"

// 0.7.12 keeps its settings in a Config singleton.
func configureModelServer(endpoint string) {
	conf := config.GetConfig()
	conf.Model.ModelServerEnable = endpoint != ""
	conf.Model.ModelServerEndpoint = endpoint
}

func newRegressor(c Case) (*regressor.Regressor, error) {
	requestSpec, discoveredSpec := &config.MachineSpec{}, (*config.MachineSpec)(nil)
	if err := decodeSpec(c.RequestSpec, &requestSpec); err != nil {
		return nil, err
	}
	if err := decodeSpec(c.DiscoveredSpec, &discoveredSpec); err != nil {
		return nil, err
	}
	return &regressor.Regressor{
		ModelServerEndpoint:         c.Endpoint,
		OutputType:                  outputType(c.OutputType),
		EnergySource:                c.Source,
		TrainerName:                 c.Trainer,
		SelectFilter:                c.Filter,
		ModelWeightsURL:             c.URL,
		ModelWeightsFilepath:        c.File,
		FloatFeatureNames:           c.Features,
		SystemMetaDataFeatureNames:  c.SystemFeatures,
		SystemMetaDataFeatureValues: c.SystemValues,
		RequestMachineSpec:          requestSpec,
		DiscoveredMachineSpec:       discoveredSpec,
	}, nil
}

func decodeSpec(raw json.RawMessage, into **config.MachineSpec) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	return json.Unmarshal(raw, into)
}

func formatProcessor(name string) string { return config.ConformanceFormatProcessor(name) }
