"""What every app uses and no app owns: domain errors, permission checks, the artifact store, the MLflow
client, metric directions, charts, admin and CLI helpers. The lowest layer: it imports no app."""
