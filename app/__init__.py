"""The services that get deployed: everything that goes into the image."""
