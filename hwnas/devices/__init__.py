"""The device registry (devices/*.toml -> Device) and one backend module per runtime (backends/)."""
