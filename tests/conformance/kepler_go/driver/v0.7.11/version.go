package main

import (
	"github.com/sustainable-computing-io/kepler/pkg/config"
	"github.com/sustainable-computing-io/kepler/pkg/model/estimator/local/regressor"
)

const keplerVersion = "v0.7.11"

// 0.7.11 reads the model server settings from package variables.
func configureModelServer(endpoint string) {
	config.ModelServerEnable = endpoint != ""
	config.ModelServerEndpoint = endpoint
}

func newRegressor(c Case) (*regressor.Regressor, error) {
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
	}, nil
}

func formatProcessor(name string) string { return "" }
