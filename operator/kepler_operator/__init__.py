"""kepler_operator: the kopf operator for TrainingPipeline and EnergyEstimation resources."""
