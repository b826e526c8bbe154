"""One APIRouter per resource: predictions, probes, the model card."""
