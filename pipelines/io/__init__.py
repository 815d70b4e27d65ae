"""Video decoding, input discovery, downloads: what comes from outside the store."""
