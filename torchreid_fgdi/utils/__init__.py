"""Small helpers every layer may use and that import nothing of the package but `errors`: whole-file
writes (`atomic`), the checkpoint file (`checkpoint`), the cache folder (`cache`), a file's sha256
(`digest`), the one reader of config YAML (`config_yaml`) and the random generators' states (`rng`)."""
