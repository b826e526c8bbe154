"""One router per resource: probes, the model lifecycle, completions."""
