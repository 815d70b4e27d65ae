"""The stages; a stage never imports another stage (import-linter)."""
