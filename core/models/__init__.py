"""Models of the families, built from PyG layers through closed registries."""
