"""Privacy: the salt, pseudonyms and lookups, redaction of secrets from output, and Azure Key Vault."""
