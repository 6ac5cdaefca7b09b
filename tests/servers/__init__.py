"""The servers tests start on loopback: Azurite, a Key Vault, PostgreSQL, sshd and an Ed-Fi API."""
