"""Running models: GLUE data, model loading, fine-tuning, and capture of sub-block states into stores."""
